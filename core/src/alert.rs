//! The alert vocabulary: what the registry says about a vehicle ([`VehicleInfo`]), an
//! [`Alert`], why a vehicle at alert level has none ([`Hold`]), the typed changes agents act
//! on ([`AlertChange`]) and the settings of the alert collection ([`AlertConfig`]).
//!
//! The alert collection itself (hysteresis, joins with the registry, appointments and
//! maintenance) is a dataflow operator in `pmi-operators` (`alerts`); this module only holds
//! the types other crates exchange, and [`AlertChange::from_updates`], which reads the
//! collection's updates at one time as changes.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize};

use crate::component::Component;
use crate::prediction::{Severity, SeverityThresholds};
use crate::time::EventTime;
use crate::VehicleId;

/// A `vehicles` row, as the alert collection takes it: who owns the vehicle, where it is
/// serviced, what it is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct VehicleRecord {
    /// Owner (`customers.customer_id`).
    pub customer_id: Option<String>,
    /// Home service centre (`service_centers.center_id`).
    pub service_center_id: Option<String>,
    /// Vehicle model.
    pub model: Option<String>,
}

/// A `customers` row, as the alert collection takes it: how to reach the owner.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CustomerRecord {
    /// The owner's name.
    pub name: Option<String>,
    /// How the owner prefers to be contacted (`email`, `sms`, `phone`, `push`, `none`).
    pub preferred_channel: Option<String>,
    /// Whether the owner agreed to be contacted about maintenance.
    pub contact_consent: Option<bool>,
}

/// A `service_centers` row, as the alert collection takes it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ServiceCenterRecord {
    /// The centre's name.
    pub name: Option<String>,
    /// Its IANA time zone (its business hours are local time).
    pub time_zone: Option<String>,
}

/// What the registry says about a vehicle, its owner and its service centre, as alerts
/// carry it: who to contact, how, and where to send the vehicle. It is the join of the
/// vehicle's [`VehicleRecord`] with its owner's [`CustomerRecord`] and its home centre's
/// [`ServiceCenterRecord`] ([`VehicleInfo::joined`]); the graph computes that join
/// incrementally, so a change to any of the three rows changes the alert.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct VehicleInfo {
    /// Owner (customer id).
    pub customer_id: Option<String>,
    /// Home service centre id.
    pub service_center_id: Option<String>,
    /// Vehicle model.
    pub model: Option<String>,
    /// The owner's name.
    pub customer_name: Option<String>,
    /// How the owner prefers to be contacted (`email`, `sms`, `phone`, `push`, `none`).
    pub preferred_channel: Option<String>,
    /// Whether the owner agreed to be contacted about maintenance.
    pub contact_consent: Option<bool>,
    /// The home centre's name.
    pub service_center_name: Option<String>,
    /// The home centre's IANA time zone (its business hours are local time).
    pub service_center_time_zone: Option<String>,
}

impl VehicleInfo {
    /// A vehicle's row joined with its owner's and home centre's rows (`None`: the vehicle
    /// names none, or one the registry does not have; the fields stay empty).
    pub fn joined(
        vehicle: &VehicleRecord,
        customer: Option<&CustomerRecord>,
        center: Option<&ServiceCenterRecord>,
    ) -> Self {
        let customer = customer.cloned().unwrap_or_default();
        let center = center.cloned().unwrap_or_default();
        VehicleInfo {
            customer_id: vehicle.customer_id.clone(),
            service_center_id: vehicle.service_center_id.clone(),
            model: vehicle.model.clone(),
            customer_name: customer.name,
            preferred_channel: customer.preferred_channel,
            contact_consent: customer.contact_consent,
            service_center_name: center.name,
            service_center_time_zone: center.time_zone,
        }
    }
}

/// An open alert: a registered vehicle whose severity level (after hysteresis) is at or
/// above the alert floor, with no open appointment and no recent repair for the component.
///
/// `severity`, `component`, `risk` and `pane_end` are those of the prediction that brought
/// the vehicle to its current level (or, at the same level, named a new component); later
/// predictions that keep the level do not change the alert, so agents see one record per
/// episode and level rather than one per prediction.
///
/// Equality, order and hash compare `risk` by its bits ([`f64::total_cmp`]), so that alerts
/// can be records of a differential collection.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Alert {
    /// The vehicle.
    pub vehicle_id: VehicleId,
    /// Severity level.
    pub severity: Severity,
    /// The implicated component, if the prediction named one.
    pub component: Option<Component>,
    /// Risk of the prediction that set the level, in [0, 1].
    pub risk: f64,
    /// Pane end of that prediction.
    pub pane_end: EventTime,
    /// The model that made that prediction.
    pub model: String,
    /// That prediction's reasons, most important first.
    pub explanation: Vec<String>,
    /// Feature values of that prediction's vector that the agents diagnose from
    /// (`name`, value); may be empty.
    pub features: Vec<(String, f64)>,
    /// The vehicle's registry row.
    pub info: VehicleInfo,
}

/// Orders feature lists by name, then value ([`f64::total_cmp`]).
pub fn cmp_features(a: &[(String, f64)], b: &[(String, f64)]) -> Ordering {
    for ((na, va), (nb, vb)) in a.iter().zip(b) {
        let o = na.cmp(nb).then_with(|| va.total_cmp(vb));
        if o != Ordering::Equal {
            return o;
        }
    }
    a.len().cmp(&b.len())
}

/// Hashes a feature list consistently with [`cmp_features`].
pub fn hash_features<H: Hasher>(features: &[(String, f64)], state: &mut H) {
    features.len().hash(state);
    for (n, v) in features {
        n.hash(state);
        v.to_bits().hash(state);
    }
}

/// The fields of an [`Alert`] that compare directly (all but `risk`).
type AlertKey<'a> = (
    &'a VehicleId,
    Severity,
    Option<Component>,
    EventTime,
    &'a VehicleInfo,
    &'a str,
    &'a [String],
);

impl Alert {
    fn cmp_key(&self) -> AlertKey<'_> {
        (
            &self.vehicle_id,
            self.severity,
            self.component,
            self.pane_end,
            &self.info,
            &self.model,
            &self.explanation,
        )
    }

    /// When the alert's response SLA ends: its pane end plus the severity's SLA
    /// ([`Severity::sla_hours`]); `None` for `normal`.
    pub fn sla_due(&self) -> Option<EventTime> {
        self.severity
            .sla_hours()
            .map(|h| EventTime(self.pane_end.0 + i64::from(h) * 3_600_000))
    }
}

/// `PartialEq`, `Eq` and `PartialOrd` of a type from its `Ord` (for records that hold floats
/// and order them by [`f64::total_cmp`], so that they can be differential records).
#[macro_export]
macro_rules! eq_and_partial_ord_from_ord {
    ($t:ty) => {
        impl PartialEq for $t {
            fn eq(&self, other: &Self) -> bool {
                self.cmp(other) == ::std::cmp::Ordering::Equal
            }
        }
        impl Eq for $t {}
        impl PartialOrd for $t {
            fn partial_cmp(&self, other: &Self) -> Option<::std::cmp::Ordering> {
                Some(self.cmp(other))
            }
        }
    };
}

eq_and_partial_ord_from_ord!(Alert);

/// By vehicle, severity, component, pane end, info, model, explanation, then risk and
/// features (floats by [`f64::total_cmp`]).
impl Ord for Alert {
    fn cmp(&self, other: &Self) -> Ordering {
        self.cmp_key()
            .cmp(&other.cmp_key())
            .then_with(|| self.risk.total_cmp(&other.risk))
            .then_with(|| cmp_features(&self.features, &other.features))
    }
}

impl Hash for Alert {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.cmp_key().hash(state);
        self.risk.to_bits().hash(state);
        hash_features(&self.features, state);
    }
}

/// Why a vehicle whose level is at or above the floor has no alert.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hold {
    /// An open appointment covers the implicated component (or the whole vehicle).
    Appointment,
    /// The implicated component was repaired recently.
    Maintenance,
    /// The vehicle is not in the registry.
    Unregistered,
}

/// Why an alert was retracted, as far as the updates at its time tell.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetractReason {
    /// An appointment was opened for the vehicle (or the component changed to one an open
    /// appointment covers).
    Booked,
    /// The component was recorded as repaired.
    Repaired,
    /// The vehicle left the registry.
    Unregistered,
    /// The vehicle's level fell below the floor (hysteresis included): it recovered.
    Recovered,
}

impl From<Hold> for RetractReason {
    fn from(hold: Hold) -> Self {
        match hold {
            Hold::Appointment => RetractReason::Booked,
            Hold::Maintenance => RetractReason::Repaired,
            Hold::Unregistered => RetractReason::Unregistered,
        }
    }
}

/// A change of the alert collection at one time, as agents act on it.
// `Changed` holds two alerts, the others one: changes come once per alert change, not per
// prediction, so boxing them would only add allocations.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertChange {
    /// A vehicle has an alert it did not have (`+1`).
    Raised(Alert),
    /// A vehicle's alert changed: severity, component or registry row (`−1` and `+1` of
    /// the same vehicle at one time).
    Changed {
        /// The alert before.
        from: Alert,
        /// The alert after.
        to: Alert,
    },
    /// A vehicle's alert went away (`−1`).
    Retracted {
        /// The alert that went away.
        alert: Alert,
        /// Why, inferred from the holds that appeared at the same time.
        reason: RetractReason,
    },
}

impl AlertChange {
    /// The vehicle the change is about.
    pub fn vehicle_id(&self) -> &VehicleId {
        &self.alert().vehicle_id
    }

    /// The alert as it is after the change (`Raised`, `Changed`), or the one retracted.
    pub fn alert(&self) -> &Alert {
        match self {
            AlertChange::Raised(a) => a,
            AlertChange::Changed { to, .. } => to,
            AlertChange::Retracted { alert, .. } => alert,
        }
    }

    /// Reads the updates of the alert collection at one time as typed changes.
    ///
    /// `alerts` are the updates of the alert collection at that time, `holds` those of the
    /// hold collection at the same time (both may be unconsolidated: they are consolidated
    /// here). All updates of a vehicle at that time must be present (the operator's
    /// `alert_changes` routes them by vehicle). Per vehicle, in vehicle order: each `−1`
    /// paired with a `+1` is [`AlertChange::Changed`] (pairs in alert order), an unpaired
    /// `+1` is [`AlertChange::Raised`], an unpaired `−1` is [`AlertChange::Retracted`],
    /// whose reason is the vehicle's hold that appeared (net `+1`) at this time (the least
    /// by [`Hold`]'s order if several), else [`RetractReason::Recovered`].
    pub fn from_updates(
        alerts: &[(Alert, isize)],
        holds: &[((VehicleId, Hold), isize)],
    ) -> Vec<AlertChange> {
        let mut net: BTreeMap<&Alert, isize> = BTreeMap::new();
        for (a, d) in alerts {
            *net.entry(a).or_default() += d;
        }
        let mut held: BTreeMap<(&VehicleId, Hold), isize> = BTreeMap::new();
        for ((v, h), d) in holds {
            *held.entry((v, *h)).or_default() += d;
        }
        // Per vehicle: alerts that went (with multiplicity) and alerts that came.
        let mut by_vehicle: BTreeMap<&VehicleId, (Vec<&Alert>, Vec<&Alert>)> = BTreeMap::new();
        for (a, d) in net {
            let entry = by_vehicle.entry(&a.vehicle_id).or_default();
            let side = if d < 0 { &mut entry.0 } else { &mut entry.1 };
            side.extend(std::iter::repeat_n(a, d.unsigned_abs()));
        }
        let mut changes = Vec::new();
        for (vehicle, (gone, came)) in by_vehicle {
            let paired = gone.len().min(came.len());
            for (from, to) in gone.iter().zip(&came) {
                changes.push(AlertChange::Changed {
                    from: (*from).clone(),
                    to: (*to).clone(),
                });
            }
            changes.extend(
                came[paired..]
                    .iter()
                    .map(|a| AlertChange::Raised((*a).clone())),
            );
            let reason = held
                .range((vehicle, Hold::Appointment)..=(vehicle, Hold::Unregistered))
                .find(|(_, d)| **d > 0)
                .map_or(RetractReason::Recovered, |((_, h), _)| (*h).into());
            changes.extend(gone[paired..].iter().map(|a| AlertChange::Retracted {
                alert: (*a).clone(),
                reason,
            }));
        }
        changes
    }
}

/// Settings of the alert collection.
#[derive(Copy, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertConfig {
    /// Lowest severity level that raises an alert (default medium).
    pub floor: Severity,
    /// Hysteresis margin: a level entered at risk ≥ its threshold is left only when risk
    /// falls below threshold − margin (default 0.05; 0 disables hysteresis).
    pub margin: f64,
    /// Severity thresholds; must be the scorer's (the level is recomputed from the risk).
    pub thresholds: SeverityThresholds,
    /// How long (ms of event time, by pane end) a vehicle's in-service predictions must keep
    /// pointing below its level before the level falls (default 15 minutes; 0: at the
    /// first such prediction). A prediction that holds the level restarts the wait; rises
    /// are never delayed. Together with the margin this keeps a risk that swings with the
    /// engine load from raising and retracting an alert every few minutes.
    pub fall_after_ms: u64,
    /// Whether a vehicle must be in the registry to have an alert. `false` (the default):
    /// an unregistered vehicle's alert carries an empty [`VehicleInfo`] (the agents then
    /// hand it to a person: nobody to call, nowhere to book); `true`: it is held as
    /// [`Hold::Unregistered`] until the vehicle is registered.
    pub require_registry: bool,
}

impl AlertConfig {
    /// Default alert floor.
    pub const DEFAULT_FLOOR: Severity = Severity::Medium;
    /// Default hysteresis margin.
    pub const DEFAULT_MARGIN: f64 = 0.05;
    /// Default fall delay: 15 minutes.
    pub const DEFAULT_FALL_AFTER_MS: u64 = 15 * 60_000;

    /// Checks the thresholds and that the margin lies in [0, 1).
    pub fn validate(&self) -> Result<(), crate::ConfigError> {
        self.thresholds.validate()?;
        if !(0.0..1.0).contains(&self.margin) {
            return Err(crate::ConfigError::new(
                "alerts.margin",
                "hysteresis margin must lie in [0, 1)",
            ));
        }
        Ok(())
    }
}

impl Default for AlertConfig {
    fn default() -> Self {
        AlertConfig {
            floor: Self::DEFAULT_FLOOR,
            margin: Self::DEFAULT_MARGIN,
            thresholds: SeverityThresholds::default(),
            fall_after_ms: Self::DEFAULT_FALL_AFTER_MS,
            require_registry: false,
        }
    }
}

/// A row of one of the tables the alert collection is checked against, as the graph's table
/// inputs take it, one input collection per variant. The SQL registry (vehicles, customers,
/// service centres), open appointments and recent maintenance records are read as these (a
/// snapshot at start, then the differences as [`TableUpdate`]s), so the agents' bookings
/// reach the graph the same way.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TableRow {
    /// A `vehicles` row.
    Vehicle(VehicleId, VehicleRecord),
    /// A `customers` row, by customer id.
    Customer(String, CustomerRecord),
    /// A `service_centers` row, by centre id.
    ServiceCenter(String, ServiceCenterRecord),
    /// An open appointment of a vehicle, for one component or (`None`) the whole vehicle.
    Appointment(VehicleId, Option<Component>),
    /// A recent repair of a vehicle's component.
    Maintenance(VehicleId, Component),
}

/// A row inserted (`+1`) into or removed (`−1`) from a table of the alert collection.
pub type TableUpdate = (TableRow, isize);

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(v: &str, severity: Severity, risk: f64) -> Alert {
        Alert {
            vehicle_id: VehicleId::parse(v).unwrap(),
            severity,
            component: Some(Component::Battery),
            risk,
            pane_end: EventTime(1_000),
            model: "test".into(),
            explanation: vec![],
            features: vec![],
            info: VehicleInfo::default(),
        }
    }

    fn vid(v: &str) -> VehicleId {
        VehicleId::parse(v).unwrap()
    }

    #[test]
    fn updates_read_as_raised_changed_and_retracted() {
        let a1 = alert("A", Severity::Medium, 0.6);
        let a2 = alert("A", Severity::High, 0.8);
        let b = alert("B", Severity::High, 0.8);
        let c = alert("C", Severity::Critical, 0.95);
        let d = alert("D", Severity::Medium, 0.55);
        let changes = AlertChange::from_updates(
            &[
                (a2.clone(), 1),
                (a1.clone(), -1),
                (b.clone(), 1),
                (c.clone(), -1),
                (d.clone(), -1),
                // Cancels out: no change for E.
                (alert("E", Severity::High, 0.8), 1),
                (alert("E", Severity::High, 0.8), -1),
            ],
            &[
                ((vid("C"), Hold::Appointment), 1),
                ((vid("D"), Hold::Maintenance), -1),
            ],
        );
        assert_eq!(
            changes,
            vec![
                AlertChange::Changed { from: a1, to: a2 },
                AlertChange::Raised(b),
                AlertChange::Retracted {
                    alert: c,
                    reason: RetractReason::Booked
                },
                // A hold that went away is no reason.
                AlertChange::Retracted {
                    alert: d,
                    reason: RetractReason::Recovered
                },
            ]
        );
    }

    #[test]
    fn alerts_order_and_compare_risk_by_bits() {
        let a = alert("A", Severity::Medium, 0.6);
        let b = alert("A", Severity::Medium, 0.7);
        assert!(a < b);
        assert_eq!(a, a.clone());
        assert_ne!(a, b);
        let nan = alert("A", Severity::Medium, f64::NAN);
        assert_eq!(nan, nan.clone());
    }

    #[test]
    fn config_validates_margin() {
        assert!(AlertConfig::default().validate().is_ok());
        let bad = AlertConfig {
            margin: -0.1,
            ..Default::default()
        };
        assert!(bad.validate().is_err());
        let parsed: AlertConfig = serde_json::from_str(r#"{"floor": "high"}"#).unwrap();
        assert_eq!(parsed.floor, Severity::High);
        assert_eq!(parsed.margin, AlertConfig::DEFAULT_MARGIN);
    }
}
