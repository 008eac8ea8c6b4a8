//! Alerts on the console: one line per prediction at or above the alert floor.

use std::io::Write;

use pmi_core::Prediction;

use crate::{ChunkSink, SinkError, SinkStats};

/// Renders one alert line: time, vehicle, severity (with its SLA), component, risk and the
/// first reason.
pub fn alert_line(p: &Prediction) -> String {
    let sla = p
        .severity
        .sla_hours()
        .map(|h| format!(" (respond within {h} h)"))
        .unwrap_or_default();
    format!(
        "ALERT {} {} {}{} component={} risk={:.2} model={} — {}",
        p.pane_end.to_rfc3339(),
        p.vehicle_id,
        p.severity.name().to_uppercase(),
        sla,
        p.component.map_or("unknown", |c| c.name()),
        p.risk,
        p.model,
        p.explanation.first().map_or("", String::as_str)
    )
}

/// Prints alerts to stdout, but only when an alert for the vehicle is new or its severity
/// or component changed (a prediction every 10 s per vehicle would drown the console).
#[derive(Default)]
pub struct ConsoleAlerts {
    last: std::collections::HashMap<
        pmi_core::VehicleId,
        (pmi_core::Severity, Option<pmi_core::Component>),
    >,
    rows: u64,
}

impl ChunkSink<Prediction> for ConsoleAlerts {
    fn send(&mut self, chunk: Vec<Prediction>) -> Result<(), SinkError> {
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        for p in chunk {
            self.rows += 1;
            let state = (p.severity, p.component);
            if self.last.get(&p.vehicle_id) != Some(&state) {
                self.last.insert(p.vehicle_id.clone(), state);
                writeln!(out, "{}", alert_line(&p)).map_err(|source| SinkError::Io {
                    path: "stdout".into(),
                    source,
                })?;
            }
        }
        Ok(())
    }
    fn close(self: Box<Self>) -> Result<SinkStats, SinkError> {
        Ok(SinkStats {
            rows: self.rows,
            files: 0,
            bytes: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pmi_core::{Component, EventTime, Severity, VehicleId};

    #[test]
    fn alert_line_names_vehicle_severity_sla_component_and_reason() {
        let p = Prediction {
            vehicle_id: VehicleId::parse("VEH_000007").unwrap(),
            pane_end: EventTime(1_700_000_000_000),
            risk: 0.93,
            severity: Severity::Critical,
            component: Some(Component::WaterPump),
            model: "rules-v1".into(),
            explanation: vec!["engine_coolant_delta_c_mean_300s = 24.1 (healthy ≤ 12)".into()],
        };
        let line = alert_line(&p);
        for needle in [
            "VEH_000007",
            "CRITICAL",
            "within 2 h",
            "water_pump",
            "0.93",
            "healthy ≤ 12",
            "2023-11-14T22:13:20",
        ] {
            assert!(line.contains(needle), "{line} lacks {needle}");
        }
    }
}
