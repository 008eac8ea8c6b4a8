-- Scheduling (PostgreSQL dialect; see ../README.md): technicians and their skills, days a
-- centre is closed, customers' preferred times, and guards against double bookings.

-- A centre's technicians. `skills`: JSON array of component names (`pmi_core::Component`,
-- e.g. ["thermostat", "battery"]); only active technicians are scheduled. A centre without
-- rows here is scheduled by bays alone.
CREATE TABLE technicians (
    technician_id TEXT PRIMARY KEY,
    center_id     TEXT NOT NULL REFERENCES service_centers (center_id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    skills        JSONB NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(skills) = 'array'),
    active        BOOLEAN NOT NULL DEFAULT TRUE,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX technicians_center_idx ON technicians (center_id);

-- Days a centre is closed (holidays, stocktaking): `day` is the centre's local date.
CREATE TABLE service_center_closures (
    center_id TEXT NOT NULL REFERENCES service_centers (center_id) ON DELETE CASCADE,
    day       DATE NOT NULL,
    reason    TEXT,
    PRIMARY KEY (center_id, day)
);

-- JSON array of {"weekday": 1..7 (Monday = 1), "from": "HH:MM", "to": "HH:MM"}, local time
-- of the centre; NULL: no preference.
ALTER TABLE customers ADD COLUMN preferred_times JSONB
    CHECK (preferred_times IS NULL OR jsonb_typeof(preferred_times) = 'array');

-- At most one open appointment per vehicle, and per alert (a restarted workflow finds the
-- appointment it booked instead of booking another).
CREATE UNIQUE INDEX appointments_one_open_per_vehicle_idx ON appointments (vehicle_id)
    WHERE status IN ('proposed', 'confirmed', 'in_progress');
CREATE UNIQUE INDEX appointments_one_open_per_alert_idx ON appointments (alert_id)
    WHERE alert_id IS NOT NULL AND status IN ('proposed', 'confirmed', 'in_progress');
-- A technician's open appointments over time (the overlap check).
CREATE INDEX appointments_open_by_technician_idx ON appointments (technician, starts_at)
    WHERE technician IS NOT NULL AND status IN ('proposed', 'confirmed', 'in_progress');
