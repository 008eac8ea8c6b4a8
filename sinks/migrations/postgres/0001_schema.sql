-- PMI storage schema, PostgreSQL dialect (see ../README.md). Timestamps are TIMESTAMPTZ
-- (UTC); column names are identical to the SQLite dialect so one code base queries both.

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
    contact_consent    BOOLEAN NOT NULL DEFAULT FALSE,
    consent_updated_at TIMESTAMPTZ,
    locale             TEXT,
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at         TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE service_centers (
    center_id      TEXT PRIMARY KEY,
    name           TEXT NOT NULL,
    -- IANA time zone of the centre, e.g. `Europe/Berlin`: business hours are local time.
    time_zone      TEXT NOT NULL,
    -- JSON array of {"weekday": 1..7 (Monday = 1), "open": "HH:MM", "close": "HH:MM"}.
    business_hours JSONB NOT NULL DEFAULT '[]',
    bays           INTEGER NOT NULL CHECK (bays > 0),
    technicians    INTEGER NOT NULL DEFAULT 0 CHECK (technicians >= 0),
    address        TEXT,
    phone          TEXT,
    latitude       DOUBLE PRECISION,
    longitude      DOUBLE PRECISION,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE vehicles (
    vehicle_id     TEXT PRIMARY KEY,
    customer_id    TEXT REFERENCES customers (customer_id) ON DELETE SET NULL,
    home_center_id TEXT REFERENCES service_centers (center_id) ON DELETE SET NULL,
    vin            TEXT UNIQUE,
    make           TEXT,
    model          TEXT,
    model_year     INTEGER,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX vehicles_customer_idx ON vehicles (customer_id);
CREATE INDEX vehicles_home_center_idx ON vehicles (home_center_id);

-- Streaming tables: written by the dataflow's sinks, keyed naturally so that a replay
-- writes nothing twice. No foreign key to `vehicles`: a streamed vehicle may be unknown to
-- the registry. Primary keys include the time column (TimescaleDB hypertables need it).

CREATE TABLE vehicle_telemetry (
    vehicle_id        TEXT NOT NULL,
    ts                TIMESTAMPTZ NOT NULL,
    engine_temp_c     DOUBLE PRECISION,
    coolant_temp_c    DOUBLE PRECISION,
    oil_pressure_kpa  DOUBLE PRECISION,
    oil_temp_c        DOUBLE PRECISION,
    rpm               DOUBLE PRECISION,
    speed_kmh         DOUBLE PRECISION,
    engine_load_pct   DOUBLE PRECISION,
    battery_voltage_v DOUBLE PRECISION,
    fuel_pressure_kpa DOUBLE PRECISION,
    fuel_level_pct    DOUBLE PRECISION,
    vibration_rms_g   DOUBLE PRECISION,
    ambient_temp_c    DOUBLE PRECISION,
    odometer_km       DOUBLE PRECISION,
    throttle_pct      DOUBLE PRECISION,
    PRIMARY KEY (vehicle_id, ts)
);

CREATE TABLE failure_predictions (
    vehicle_id  TEXT NOT NULL,
    pane_end    TIMESTAMPTZ NOT NULL,
    risk        DOUBLE PRECISION NOT NULL CHECK (risk >= 0 AND risk <= 1),
    severity    TEXT NOT NULL
        CHECK (severity IN ('normal', 'low', 'medium', 'high', 'critical')),
    component   TEXT,
    model       TEXT NOT NULL,
    -- JSON array of strings, most important reason first.
    explanation JSONB NOT NULL DEFAULT '[]',
    -- The primary key (vehicle_id, pane_end) also serves "latest prediction per vehicle".
    PRIMARY KEY (vehicle_id, pane_end)
);

CREATE TABLE alerts (
    alert_id        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    vehicle_id      TEXT NOT NULL,
    -- The pane the dataflow raised the alert at: (vehicle_id, pane_end) is the natural key.
    pane_end        TIMESTAMPTZ NOT NULL,
    severity        TEXT NOT NULL
        CHECK (severity IN ('normal', 'low', 'medium', 'high', 'critical')),
    -- 0 normal … 4 critical, so that queries can order by urgency.
    severity_rank   SMALLINT NOT NULL CHECK (severity_rank BETWEEN 0 AND 4),
    component       TEXT,
    risk            DOUBLE PRECISION NOT NULL CHECK (risk >= 0 AND risk <= 1),
    model           TEXT NOT NULL,
    explanation     JSONB NOT NULL DEFAULT '[]',
    -- Written by the agents only; the sink's upsert never changes it.
    status          TEXT NOT NULL DEFAULT 'open'
        CHECK (status IN ('open', 'acknowledged', 'resolved')),
    -- pane_end + the severity's response SLA (NULL for `normal`).
    sla_due_at      TIMESTAMPTZ,
    raised_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    acknowledged_at TIMESTAMPTZ,
    resolved_at     TIMESTAMPTZ,
    resolution      TEXT,
    UNIQUE (vehicle_id, pane_end)
);
CREATE INDEX alerts_open_by_severity_idx ON alerts (severity_rank DESC, pane_end)
    WHERE status <> 'resolved';
CREATE INDEX alerts_status_idx ON alerts (status, updated_at);

-- Agents' tables. -------------------------------------------------------------------------

CREATE TABLE appointments (
    appointment_id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    vehicle_id     TEXT NOT NULL REFERENCES vehicles (vehicle_id) ON DELETE CASCADE,
    center_id      TEXT NOT NULL REFERENCES service_centers (center_id),
    bay            INTEGER NOT NULL CHECK (bay >= 1),
    technician     TEXT,
    alert_id       BIGINT REFERENCES alerts (alert_id) ON DELETE SET NULL,
    starts_at      TIMESTAMPTZ NOT NULL,
    ends_at        TIMESTAMPTZ NOT NULL,
    status         TEXT NOT NULL DEFAULT 'proposed'
        CHECK (status IN ('proposed', 'confirmed', 'in_progress', 'completed', 'cancelled', 'no_show')),
    component      TEXT,
    booked_by      TEXT,
    notes          TEXT,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
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
    rca_id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
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
    evidence          JSONB NOT NULL DEFAULT '{}',
    owner             TEXT,
    opened_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    closed_at         TIMESTAMPTZ
);
CREATE INDEX rca_capa_component_idx ON rca_capa_records (component, status);

CREATE TABLE maintenance_records (
    maintenance_id    BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    vehicle_id        TEXT NOT NULL REFERENCES vehicles (vehicle_id) ON DELETE CASCADE,
    center_id         TEXT REFERENCES service_centers (center_id),
    appointment_id    BIGINT REFERENCES appointments (appointment_id) ON DELETE SET NULL,
    alert_id          BIGINT REFERENCES alerts (alert_id) ON DELETE SET NULL,
    rca_id            BIGINT REFERENCES rca_capa_records (rca_id) ON DELETE SET NULL,
    performed_at      TIMESTAMPTZ NOT NULL,
    odometer_km       DOUBLE PRECISION,
    component         TEXT,
    work_type         TEXT NOT NULL
        CHECK (work_type IN ('inspection', 'repair', 'replacement', 'preventive')),
    -- Feedback: did the technician find the predicted failure? NULL: not assessed.
    failure_confirmed BOOLEAN,
    technician        TEXT,
    labour_hours      DOUBLE PRECISION,
    parts             JSONB NOT NULL DEFAULT '[]',
    cost              DOUBLE PRECISION,
    currency          TEXT,
    notes             TEXT,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX maintenance_vehicle_idx ON maintenance_records (vehicle_id, performed_at DESC);
CREATE INDEX maintenance_component_idx ON maintenance_records (component, performed_at);

-- Append-only; no foreign key to `alerts` (the log outlives alert retention). The primary
-- key includes `at` (TimescaleDB hypertables need it).
CREATE TABLE agent_audit_log (
    audit_id   BIGINT GENERATED ALWAYS AS IDENTITY,
    at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    agent      TEXT NOT NULL,
    action     TEXT NOT NULL,
    alert_id   BIGINT,
    vehicle_id TEXT,
    outcome    TEXT NOT NULL
        CHECK (outcome IN ('success', 'failure', 'retry', 'skipped', 'escalated')),
    latency_ms BIGINT CHECK (latency_ms >= 0),
    details    JSONB NOT NULL DEFAULT '{}',
    PRIMARY KEY (audit_id, at)
);
CREATE INDEX agent_audit_alert_idx ON agent_audit_log (alert_id, at);
CREATE INDEX agent_audit_at_idx ON agent_audit_log (at);
CREATE INDEX agent_audit_agent_idx ON agent_audit_log (agent, at);
