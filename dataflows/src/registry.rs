//! The simulated fleet's registry: one customer per vehicle, a handful of service centres
//! in different time zones with their technicians, and the vehicles with their home centre, upserted into the
//! database before a simulator run so that its alerts carry an owner and a workshop and
//! the agents have somewhere to book. Deterministic from the fleet (same ids every run),
//! so a rerun rewrites the same rows.

use pmi_core::{Component, System};
use pmi_sinks::sql::registry::{
    upsert_customers, upsert_service_centers, upsert_technicians, upsert_vehicles, ContactChannel,
    Customer, OpeningHours, PreferredTime, ServiceCenter, Technician, Vehicle,
};
use pmi_sinks::sql::{Database, SqlConfig};
use pmi_sources::fleet::Fleet;

use crate::jobs::FleetSpec;
use crate::DataflowError;

/// Vehicles per simulated service centre.
pub const VEHICLES_PER_CENTER: u32 = 25;

/// The simulated centres: id suffix, city, IANA zone.
const CITIES: [(&str, &str, &str); 4] = [
    ("BER", "Berlin", "Europe/Berlin"),
    ("LYS", "Lyon", "Europe/Paris"),
    ("CHI", "Chicago", "America/Chicago"),
    ("PUN", "Pune", "Asia/Kolkata"),
];

/// The simulated registry of a fleet.
#[derive(Clone, Debug, Default)]
pub struct FleetRegistry {
    /// One customer per vehicle (every fourth prefers weekday mornings).
    pub customers: Vec<Customer>,
    /// One centre per [`VEHICLES_PER_CENTER`] vehicles.
    pub centers: Vec<ServiceCenter>,
    /// Six technicians per centre, two per pair of systems.
    pub technicians: Vec<Technician>,
    /// The vehicles.
    pub vehicles: Vec<Vehicle>,
}

/// The skills of a centre's technicians: each covers two systems, and every system is
/// covered by two of them.
const SKILLS: [[System; 2]; 6] = [
    [System::Cooling, System::Oil],
    [System::Vibration, System::Electrical],
    [System::Fuel, System::Cooling],
    [System::Oil, System::Vibration],
    [System::Electrical, System::Fuel],
    [System::Cooling, System::Vibration],
];

/// The registry rows of `fleet`.
pub fn fleet_registry(fleet: &FleetSpec) -> Result<FleetRegistry, DataflowError> {
    let config = fleet.simulator_config(std::time::Duration::from_secs(86_400));
    let sim = Fleet::new(config).map_err(|e| DataflowError::Input(e.to_string()))?;
    let centers_needed = fleet.vehicles.div_ceil(VEHICLES_PER_CENTER).max(1);
    let centers: Vec<ServiceCenter> = (0..centers_needed)
        .map(|i| {
            let (code, city, zone) = CITIES[i as usize % CITIES.len()];
            let weekdays = (1..=5).map(|d| OpeningHours {
                weekday: d,
                open: "08:00".into(),
                close: "18:00".into(),
            });
            let saturday = OpeningHours {
                weekday: 6,
                open: "09:00".into(),
                close: "13:00".into(),
            };
            ServiceCenter {
                center_id: format!("SC_{code}_{:02}", i / CITIES.len() as u32 + 1),
                name: format!("PMI Service {city} {}", i / CITIES.len() as u32 + 1),
                time_zone: zone.into(),
                business_hours: weekdays.chain(std::iter::once(saturday)).collect(),
                bays: 4,
                technicians: 6,
                address: None,
                phone: None,
                latitude: None,
                longitude: None,
            }
        })
        .collect();
    let mut customers = Vec::new();
    let mut vehicles = Vec::new();
    for (i, v) in sim.vehicles().enumerate() {
        let n = v.id.as_str().trim_start_matches("VEH_").to_owned();
        let customer_id = format!("CUST_{n}");
        customers.push(Customer {
            customer_id: customer_id.clone(),
            name: format!("Fleet customer {n}"),
            email: Some(format!("customer{n}@example.invalid")),
            phone: Some(format!("+1555{n}")),
            preferred_channel: if i % 3 == 0 {
                ContactChannel::Phone
            } else {
                ContactChannel::Sms
            },
            contact_consent: true,
            locale: Some("en-US".into()),
            preferred_times: (i % 4 == 0).then(|| {
                (1..=5)
                    .map(|d| PreferredTime {
                        weekday: d,
                        from: "08:00".into(),
                        to: "12:00".into(),
                    })
                    .collect()
            }),
        });
        vehicles.push(Vehicle {
            vehicle_id: v.id.to_string(),
            customer_id: Some(customer_id),
            home_center_id: Some(centers[i / VEHICLES_PER_CENTER as usize].center_id.clone()),
            vin: None,
            make: Some("PMI Motors".into()),
            model: Some(v.model.into()),
            model_year: None,
        });
    }
    let technicians = centers
        .iter()
        .flat_map(|c| {
            SKILLS.iter().enumerate().map(|(k, systems)| Technician {
                technician_id: format!("TECH_{}_{}", c.center_id.trim_start_matches("SC_"), k + 1),
                center_id: c.center_id.clone(),
                name: format!("Technician {} of {}", k + 1, c.name),
                skills: Component::ALL
                    .into_iter()
                    .filter(|x| systems.contains(&x.system()))
                    .collect(),
                active: true,
            })
        })
        .collect();
    Ok(FleetRegistry {
        customers,
        centers,
        technicians,
        vehicles,
    })
}

/// Upserts the registry of `fleet` into the database of `config` (schema prepared).
pub fn seed(config: &SqlConfig, fleet: &FleetSpec) -> Result<(), DataflowError> {
    let r = fleet_registry(fleet)?;
    let err = |e: pmi_sinks::SinkError| DataflowError::Sink(e.to_string());
    let rt = tokio_runtime()?;
    rt.block_on(async {
        let db = Database::connect(config).await.map_err(err)?;
        upsert_customers(&db, &r.customers).await.map_err(err)?;
        upsert_service_centers(&db, &r.centers).await.map_err(err)?;
        upsert_technicians(&db, &r.technicians).await.map_err(err)?;
        upsert_vehicles(&db, &r.vehicles).await.map_err(err)?;
        db.close().await;
        Ok(())
    })
}

fn tokio_runtime() -> Result<tokio::runtime::Runtime, DataflowError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| DataflowError::Input(format!("tokio runtime: {e}")))
}
