//! Alert changes on the console: one line per change of the alert collection (raised,
//! changed, retracted), for a person watching `pmi run`.

use std::io::Write;

use pmi_core::{Alert, AlertChange, RetractReason};

use crate::{ChunkSink, SinkError, SinkStats};

/// Severity (with its SLA), component, risk and the first reason of `a`.
fn describe(a: &Alert) -> String {
    let sla = a
        .severity
        .sla_hours()
        .map(|h| format!(" (respond within {h} h)"))
        .unwrap_or_default();
    format!(
        "{}{} component={} risk={:.2} model={} — {}",
        a.severity.name().to_uppercase(),
        sla,
        a.component.map_or("unknown", |c| c.name()),
        a.risk,
        a.model,
        a.explanation.first().map_or("", String::as_str)
    )
}

/// Renders one change: the pane time, the vehicle, what happened and the alert.
pub fn alert_line(change: &AlertChange) -> String {
    let a = change.alert();
    let what = match change {
        AlertChange::Raised(a) => format!("RAISED {}", describe(a)),
        AlertChange::Changed { from, to } => format!(
            "CHANGED from {} {} to {}",
            from.severity.name(),
            from.component.map_or("unknown", |c| c.name()),
            describe(to)
        ),
        AlertChange::Retracted { reason, .. } => format!(
            "RETRACTED ({}) {}",
            match reason {
                RetractReason::Booked => "appointment booked",
                RetractReason::Repaired => "repaired",
                RetractReason::Unregistered => "left the registry",
                RetractReason::Recovered => "recovered",
            },
            describe(a)
        ),
    };
    format!("ALERT {} {} {what}", a.pane_end.to_rfc3339(), a.vehicle_id)
}

/// Prints every alert change to stdout.
#[derive(Default)]
pub struct ConsoleAlerts {
    rows: u64,
}

impl ChunkSink<AlertChange> for ConsoleAlerts {
    fn send(&mut self, chunk: Vec<AlertChange>) -> Result<(), SinkError> {
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        for change in chunk {
            self.rows += 1;
            writeln!(out, "{}", alert_line(&change)).map_err(|source| SinkError::Io {
                path: "stdout".into(),
                source,
            })?;
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
    use pmi_core::{Component, EventTime, Severity, VehicleId, VehicleInfo};

    fn alert(severity: Severity) -> Alert {
        Alert {
            vehicle_id: VehicleId::parse("VEH_000007").unwrap(),
            pane_end: EventTime(1_700_000_000_000),
            risk: 0.93,
            severity,
            component: Some(Component::WaterPump),
            model: "rules-v1".into(),
            explanation: vec!["engine_coolant_delta_c_mean_300s = 24.1 (healthy ≤ 12)".into()],
            features: vec![],
            info: VehicleInfo::default(),
        }
    }

    #[test]
    fn lines_name_vehicle_change_severity_sla_component_and_reason() {
        let line = alert_line(&AlertChange::Raised(alert(Severity::Critical)));
        for needle in [
            "VEH_000007",
            "RAISED CRITICAL",
            "within 2 h",
            "water_pump",
            "0.93",
            "healthy ≤ 12",
            "2023-11-14T22:13:20",
        ] {
            assert!(line.contains(needle), "{line} lacks {needle}");
        }
        let line = alert_line(&AlertChange::Changed {
            from: alert(Severity::High),
            to: alert(Severity::Critical),
        });
        assert!(
            line.contains("CHANGED from high water_pump to CRITICAL"),
            "{line}"
        );
        let line = alert_line(&AlertChange::Retracted {
            alert: alert(Severity::High),
            reason: RetractReason::Booked,
        });
        assert!(
            line.contains("RETRACTED (appointment booked) HIGH"),
            "{line}"
        );
    }
}
