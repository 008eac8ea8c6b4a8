-- Alert changes from the dataflow, and the master agent's durable workflows (see the
-- PostgreSQL dialect for the comments).

ALTER TABLE alerts ADD COLUMN active INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1));
ALTER TABLE alerts ADD COLUMN retraction TEXT
    CHECK (retraction IN ('booked', 'repaired', 'unregistered', 'recovered', 'superseded'));
ALTER TABLE alerts ADD COLUMN retracted_at INTEGER;
ALTER TABLE alerts ADD COLUMN features TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(features));
CREATE INDEX alerts_active_idx ON alerts (severity_rank DESC, pane_end)
    WHERE active = 1 AND status <> 'resolved';

CREATE TABLE agent_workflows (
    alert_id          INTEGER PRIMARY KEY REFERENCES alerts (alert_id) ON DELETE CASCADE,
    vehicle_id        TEXT NOT NULL,
    severity          TEXT NOT NULL
        CHECK (severity IN ('normal', 'low', 'medium', 'high', 'critical')),
    sla_due_at        INTEGER NOT NULL,
    state             TEXT NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'diagnosed', 'offered', 'booked', 'confirmed',
                         'escalated', 'cancelled')),
    diagnosis         TEXT CHECK (diagnosis IS NULL OR json_valid(diagnosis)),
    offers            TEXT CHECK (offers IS NULL OR json_valid(offers)),
    appointment_id    INTEGER REFERENCES appointments (appointment_id) ON DELETE SET NULL,
    attempts          INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    escalation_reason TEXT,
    created_at        INTEGER NOT NULL DEFAULT (CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER)),
    updated_at        INTEGER NOT NULL DEFAULT (CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER)),
    closed_at         INTEGER
);
CREATE INDEX agent_workflows_state_idx ON agent_workflows (state, updated_at);
CREATE INDEX agent_workflows_vehicle_idx ON agent_workflows (vehicle_id);
