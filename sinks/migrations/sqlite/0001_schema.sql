-- PMI storage schema, SQLite dialect (see ../README.md). Timestamps are INTEGER milliseconds
-- since the Unix epoch (UTC); booleans are 0/1; JSON is TEXT checked by json_valid. Column
-- names are identical to the PostgreSQL dialect so one code base queries both.

-- Registry: who owns a vehicle, where it is serviced. ------------------------------------

CREATE TABLE customers (
    customer_id        TEXT PRIMARY KEY,
    name               TEXT NOT NULL,
    email              TEXT,
    phone              TEXT,
    -- How the customer engagement agent reaches this customer.
    preferred_channel  TEXT NOT NULL DEFAULT 'email'
        CHECK (preferred_channel IN ('email', 'sms', 'phone', 'push', 'none')),
    -- Consent to be contacted about maintenance (GDPR-style: no consent, no message).
    contact_consent    INTEGER NOT NULL DEFAULT 0 CHECK (contact_consent IN (0, 1)),
    consent_updated_at INTEGER,
    locale             TEXT,
    created_at         INTEGER NOT NULL DEFAULT (CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER)),
    updated_at         INTEGER NOT NULL DEFAULT (CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER))
);

CREATE TABLE service_centers (
    center_id      TEXT PRIMARY KEY,
    name           TEXT NOT NULL,
    -- IANA time zone of the centre, e.g. `Europe/Berlin`: business hours are local time.
    time_zone      TEXT NOT NULL,
    -- JSON array of {"weekday": 1..7 (Monday = 1), "open": "HH:MM", "close": "HH:MM"}.
    business_hours TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(business_hours)),
    bays           INTEGER NOT NULL CHECK (bays > 0),
    technicians    INTEGER NOT NULL DEFAULT 0 CHECK (technicians >= 0),
    address        TEXT,
    phone          TEXT,
    latitude       REAL,
    longitude      REAL,
    created_at     INTEGER NOT NULL DEFAULT (CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER)),
    updated_at     INTEGER NOT NULL DEFAULT (CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER))
);

CREATE TABLE vehicles (
    vehicle_id     TEXT PRIMARY KEY,
    customer_id    TEXT REFERENCES customers (customer_id) ON DELETE SET NULL,
    home_center_id TEXT REFERENCES service_centers (center_id) ON DELETE SET NULL,
    vin            TEXT UNIQUE,
    make           TEXT,
    model          TEXT,
    model_year     INTEGER,
    created_at     INTEGER NOT NULL DEFAULT (CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER)),
    updated_at     INTEGER NOT NULL DEFAULT (CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER))
);
CREATE INDEX vehicles_customer_idx ON vehicles (customer_id);
CREATE INDEX vehicles_home_center_idx ON vehicles (home_center_id);

-- Streaming tables: written by the dataflow's sinks, keyed naturally so that a replay
-- writes nothing twice. No foreign key to `vehicles`: a streamed vehicle may be unknown to
-- the registry. Primary keys include the time column, as in PostgreSQL.

CREATE TABLE vehicle_telemetry (
    vehicle_id        TEXT NOT NULL,
    ts                INTEGER NOT NULL,
    engine_temp_c     REAL,
    coolant_temp_c    REAL,
    oil_pressure_kpa  REAL,
    oil_temp_c        REAL,
    rpm               REAL,
    speed_kmh         REAL,
    engine_load_pct   REAL,
    battery_voltage_v REAL,
    fuel_pressure_kpa REAL,
    fuel_level_pct    REAL,
    vibration_rms_g   REAL,
    ambient_temp_c    REAL,
    odometer_km       REAL,
    throttle_pct      REAL,
    PRIMARY KEY (vehicle_id, ts)
);

CREATE TABLE failure_predictions (
    vehicle_id  TEXT NOT NULL,
    pane_end    INTEGER NOT NULL,
    risk        REAL NOT NULL CHECK (risk >= 0 AND risk <= 1),
    severity    TEXT NOT NULL
        CHECK (severity IN ('normal', 'low', 'medium', 'high', 'critical')),
    component   TEXT,
    model       TEXT NOT NULL,
    -- JSON array of strings, most important reason first.
    explanation TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(explanation)),
    -- The primary key (vehicle_id, pane_end) also serves "latest prediction per vehicle".
    PRIMARY KEY (vehicle_id, pane_end)
);

CREATE TABLE alerts (
    alert_id        INTEGER PRIMARY KEY AUTOINCREMENT,
    vehicle_id      TEXT NOT NULL,
    -- The pane the dataflow raised the alert at: (vehicle_id, pane_end) is the natural key.
    pane_end        INTEGER NOT NULL,
    severity        TEXT NOT NULL
        CHECK (severity IN ('normal', 'low', 'medium', 'high', 'critical')),
    -- 0 normal … 4 critical, so that queries can order by urgency.
    severity_rank   INTEGER NOT NULL CHECK (severity_rank BETWEEN 0 AND 4),
    component       TEXT,
    risk            REAL NOT NULL CHECK (risk >= 0 AND risk <= 1),
    model           TEXT NOT NULL,
    explanation     TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(explanation)),
    -- Written by the agents only; the sink's upsert never changes it.
    status          TEXT NOT NULL DEFAULT 'open'
        CHECK (status IN ('open', 'acknowledged', 'resolved')),
    -- pane_end + the severity's response SLA (NULL for `normal`).
    sla_due_at      INTEGER,
    raised_at       INTEGER NOT NULL DEFAULT (CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER)),
    updated_at      INTEGER NOT NULL DEFAULT (CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER)),
    acknowledged_at INTEGER,
    resolved_at     INTEGER,
    resolution      TEXT,
    UNIQUE (vehicle_id, pane_end)
);
CREATE INDEX alerts_open_by_severity_idx ON alerts (severity_rank DESC, pane_end)
    WHERE status <> 'resolved';
CREATE INDEX alerts_status_idx ON alerts (status, updated_at);

-- Agents' tables. -------------------------------------------------------------------------

CREATE TABLE appointments (
    appointment_id INTEGER PRIMARY KEY AUTOINCREMENT,
    vehicle_id     TEXT NOT NULL REFERENCES vehicles (vehicle_id) ON DELETE CASCADE,
    center_id      TEXT NOT NULL REFERENCES service_centers (center_id),
    bay            INTEGER NOT NULL CHECK (bay >= 1),
    technician     TEXT,
    alert_id       INTEGER REFERENCES alerts (alert_id) ON DELETE SET NULL,
    starts_at      INTEGER NOT NULL,
    ends_at        INTEGER NOT NULL,
    status         TEXT NOT NULL DEFAULT 'proposed'
        CHECK (status IN ('proposed', 'confirmed', 'in_progress', 'completed', 'cancelled', 'no_show')),
    component      TEXT,
    booked_by      TEXT,
    notes          TEXT,
    created_at     INTEGER NOT NULL DEFAULT (CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER)),
    updated_at     INTEGER NOT NULL DEFAULT (CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER)),
    CHECK (ends_at > starts_at)
);
-- Open appointments by vehicle (the alert anti-join) and by centre and time (scheduling).
CREATE INDEX appointments_open_by_vehicle_idx ON appointments (vehicle_id, starts_at)
    WHERE status IN ('proposed', 'confirmed', 'in_progress');
CREATE INDEX appointments_open_by_center_idx ON appointments (center_id, starts_at)
    WHERE status IN ('proposed', 'confirmed', 'in_progress');
-- A cheap guard against booking one bay twice for the same start.
CREATE UNIQUE INDEX appointments_bay_slot_idx ON appointments (center_id, bay, starts_at)
    WHERE status IN ('proposed', 'confirmed', 'in_progress');
CREATE INDEX appointments_alert_idx ON appointments (alert_id);

CREATE TABLE rca_capa_records (
    rca_id            INTEGER PRIMARY KEY AUTOINCREMENT,
    component         TEXT NOT NULL,
    title             TEXT NOT NULL,
    root_cause        TEXT,
    corrective_action TEXT,
    preventive_action TEXT,
    status            TEXT NOT NULL DEFAULT 'open'
        CHECK (status IN ('open', 'investigating', 'action_planned', 'verified', 'closed')),
    severity          TEXT
        CHECK (severity IN ('normal', 'low', 'medium', 'high', 'critical')),
    affected_vehicles INTEGER NOT NULL DEFAULT 0,
    -- JSON: the alerts, maintenance records and statistics the analysis rests on.
    evidence          TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(evidence)),
    owner             TEXT,
    opened_at         INTEGER NOT NULL DEFAULT (CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER)),
    updated_at        INTEGER NOT NULL DEFAULT (CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER)),
    closed_at         INTEGER
);
CREATE INDEX rca_capa_component_idx ON rca_capa_records (component, status);

CREATE TABLE maintenance_records (
    maintenance_id    INTEGER PRIMARY KEY AUTOINCREMENT,
    vehicle_id        TEXT NOT NULL REFERENCES vehicles (vehicle_id) ON DELETE CASCADE,
    center_id         TEXT REFERENCES service_centers (center_id),
    appointment_id    INTEGER REFERENCES appointments (appointment_id) ON DELETE SET NULL,
    alert_id          INTEGER REFERENCES alerts (alert_id) ON DELETE SET NULL,
    rca_id            INTEGER REFERENCES rca_capa_records (rca_id) ON DELETE SET NULL,
    performed_at      INTEGER NOT NULL,
    odometer_km       REAL,
    component         TEXT,
    work_type         TEXT NOT NULL
        CHECK (work_type IN ('inspection', 'repair', 'replacement', 'preventive')),
    -- Feedback: did the technician find the predicted failure? NULL: not assessed.
    failure_confirmed INTEGER CHECK (failure_confirmed IN (0, 1)),
    technician        TEXT,
    labour_hours      REAL,
    parts             TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(parts)),
    cost              REAL,
    currency          TEXT,
    notes             TEXT,
    created_at        INTEGER NOT NULL DEFAULT (CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER))
);
CREATE INDEX maintenance_vehicle_idx ON maintenance_records (vehicle_id, performed_at DESC);
CREATE INDEX maintenance_component_idx ON maintenance_records (component, performed_at);

-- Append-only; no foreign key to `alerts` (the log outlives alert retention). The key is
-- the rowid here; PostgreSQL's is (audit_id, at) for TimescaleDB.
CREATE TABLE agent_audit_log (
    audit_id   INTEGER PRIMARY KEY AUTOINCREMENT,
    at         INTEGER NOT NULL DEFAULT (CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER)),
    agent      TEXT NOT NULL,
    action     TEXT NOT NULL,
    alert_id   INTEGER,
    vehicle_id TEXT,
    outcome    TEXT NOT NULL
        CHECK (outcome IN ('success', 'failure', 'retry', 'skipped', 'escalated')),
    latency_ms INTEGER CHECK (latency_ms >= 0),
    details    TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(details))
);
CREATE INDEX agent_audit_alert_idx ON agent_audit_log (alert_id, at);
CREATE INDEX agent_audit_at_idx ON agent_audit_log (at);
CREATE INDEX agent_audit_agent_idx ON agent_audit_log (agent, at);
