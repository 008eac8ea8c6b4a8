//! Components that fail, the systems they belong to, and ground-truth failure events.

use serde::{Deserialize, Serialize};

use crate::time::EventTime;
use crate::VehicleId;

/// A vehicle system (the grouping the maintenance agents use).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum System {
    /// Thermostat, water pump, radiator.
    Cooling,
    /// Oil pump, oil seals.
    Oil,
    /// Engine mounts, wheels, driveshaft.
    Vibration,
    /// Battery.
    Electrical,
    /// Fuel pump, fuel filter.
    Fuel,
}

/// A component with a failure mode the simulator injects and the scorers recognise.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Component {
    /// Thermostat stuck (closed: overheating; open: engine runs cold).
    Thermostat,
    /// Water pump wearing out: coolant flow drops, engine–coolant gap and temperatures rise.
    WaterPump,
    /// Radiator clogging: heat rejection drops, temperatures climb under load.
    Radiator,
    /// Oil pump weakening: oil pressure per RPM falls.
    OilPump,
    /// Oil leak: level and pressure fall over days, oil temperature rises.
    OilLeak,
    /// Engine mounts: vibration at idle grows.
    EngineMounts,
    /// Wheel imbalance: vibration grows with speed.
    WheelBalance,
    /// Driveshaft / CV joint wear: vibration under load and speed.
    Driveshaft,
    /// Battery degradation: voltage sags at rest and cranking.
    Battery,
    /// Fuel pump weakening: rail pressure falls at high load.
    FuelPump,
    /// Fuel filter clogging: rail pressure drops progressively with demand.
    FuelFilter,
}

impl Component {
    /// Position in [`Component::ALL`] (a class index for models).
    pub fn index(self) -> usize {
        Component::ALL
            .iter()
            .position(|c| *c == self)
            .expect("every component is in ALL")
    }

    /// All components.
    pub const ALL: [Component; 11] = [
        Component::Thermostat,
        Component::WaterPump,
        Component::Radiator,
        Component::OilPump,
        Component::OilLeak,
        Component::EngineMounts,
        Component::WheelBalance,
        Component::Driveshaft,
        Component::Battery,
        Component::FuelPump,
        Component::FuelFilter,
    ];

    /// Stable snake_case name.
    pub const fn name(self) -> &'static str {
        match self {
            Component::Thermostat => "thermostat",
            Component::WaterPump => "water_pump",
            Component::Radiator => "radiator",
            Component::OilPump => "oil_pump",
            Component::OilLeak => "oil_leak",
            Component::EngineMounts => "engine_mounts",
            Component::WheelBalance => "wheel_balance",
            Component::Driveshaft => "driveshaft",
            Component::Battery => "battery",
            Component::FuelPump => "fuel_pump",
            Component::FuelFilter => "fuel_filter",
        }
    }

    /// The system the component belongs to.
    pub const fn system(self) -> System {
        match self {
            Component::Thermostat | Component::WaterPump | Component::Radiator => System::Cooling,
            Component::OilPump | Component::OilLeak => System::Oil,
            Component::EngineMounts | Component::WheelBalance | Component::Driveshaft => {
                System::Vibration
            }
            Component::Battery => System::Electrical,
            Component::FuelPump | Component::FuelFilter => System::Fuel,
        }
    }

    /// Looks a component up by name.
    pub fn from_name(name: &str) -> Option<Component> {
        Component::ALL.into_iter().find(|c| c.name() == name)
    }
}

impl std::fmt::Display for Component {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Ground truth from the simulator: a component of a vehicle starts degrading at `onset`
/// and fails at `failure`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FailureEvent {
    /// The vehicle.
    pub vehicle_id: VehicleId,
    /// The failing component.
    pub component: Component,
    /// When degradation starts.
    pub onset: EventTime,
    /// When the component fails.
    pub failure: EventTime,
}
