-- Alert changes from the dataflow, and the master agent's durable workflows.

-- The dataflow writes an alert's life, the agents its handling (`status`): `active` is
-- whether the alert is in the dataflow's alert collection now; a retracted alert keeps its
-- row with why it went (`retraction`) and when (`retracted_at`).
ALTER TABLE alerts ADD COLUMN active BOOLEAN NOT NULL DEFAULT TRUE;
ALTER TABLE alerts ADD COLUMN retraction TEXT
    CHECK (retraction IN ('booked', 'repaired', 'unregistered', 'recovered', 'superseded'));
ALTER TABLE alerts ADD COLUMN retracted_at TIMESTAMPTZ;
-- The feature values the alert was raised on that the diagnosis agent reads (JSON object
-- name → value).
ALTER TABLE alerts ADD COLUMN features JSONB NOT NULL DEFAULT '{}';
-- The master agent's work queue: active alerts not resolved, most urgent first.
CREATE INDEX alerts_active_idx ON alerts (severity_rank DESC, pane_end)
    WHERE active AND status <> 'resolved';

-- One workflow per alert (diagnose → slots within the SLA → customer → book → confirm).
-- Each step commits its state here before the next begins, so a restarted agent resumes
-- where it stopped; booking is idempotent per alert (the scheduling agent's guard).
CREATE TABLE agent_workflows (
    alert_id          BIGINT PRIMARY KEY REFERENCES alerts (alert_id) ON DELETE CASCADE,
    vehicle_id        TEXT NOT NULL,
    severity          TEXT NOT NULL
        CHECK (severity IN ('normal', 'low', 'medium', 'high', 'critical')),
    -- pane end + the severity's SLA: the appointment must start by then.
    sla_due_at        TIMESTAMPTZ NOT NULL,
    state             TEXT NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'diagnosed', 'offered', 'booked', 'confirmed',
                         'escalated', 'cancelled')),
    -- The diagnosis agent's answer and the slots offered (JSON).
    diagnosis         JSONB,
    offers            JSONB,
    appointment_id    BIGINT REFERENCES appointments (appointment_id) ON DELETE SET NULL,
    attempts          INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- Why a person must take over (the human queue is `state = 'escalated'`).
    escalation_reason TEXT,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    closed_at         TIMESTAMPTZ
);
CREATE INDEX agent_workflows_state_idx ON agent_workflows (state, updated_at);
CREATE INDEX agent_workflows_vehicle_idx ON agent_workflows (vehicle_id);
