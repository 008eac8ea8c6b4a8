//! The scheduling agent's settings: the `[scheduling]` section of the configuration file.

use serde::{Deserialize, Serialize};

use pmi_core::ConfigError;
use pmi_sinks::sql::registry::OpeningHours;

/// How the scheduler offers and books slots.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulingConfig {
    /// Slot granularity in minutes: appointments start at opening time plus a multiple of
    /// this. Default 30.
    pub slot_minutes: u32,
    /// Opening hours of a centre whose `business_hours` is empty, local time of the centre.
    /// Default Monday to Friday, 08:00 to 18:00.
    pub default_hours: Vec<OpeningHours>,
    /// Slots offered per request. Default 3.
    pub max_offers: usize,
    /// Longest request window (`deadline - earliest`) searched, in days. Default 92.
    pub max_window_days: u32,
}

/// Monday to Friday, 08:00 to 18:00.
pub fn weekday_hours() -> Vec<OpeningHours> {
    (1..=5)
        .map(|weekday| OpeningHours {
            weekday,
            open: "08:00".into(),
            close: "18:00".into(),
        })
        .collect()
}

impl Default for SchedulingConfig {
    fn default() -> Self {
        SchedulingConfig {
            slot_minutes: 30,
            default_hours: weekday_hours(),
            max_offers: 3,
            max_window_days: 92,
        }
    }
}

impl SchedulingConfig {
    /// Checks the settings (names the one at fault).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |setting: &str, message: &str| {
            Err(ConfigError::new(format!("scheduling.{setting}"), message))
        };
        if self.slot_minutes == 0 || self.slot_minutes > 24 * 60 {
            return bad("slot_minutes", "must be in 1 ..= 1440");
        }
        if self.max_offers == 0 {
            return bad("max_offers", "must be at least 1");
        }
        if self.max_window_days == 0 {
            return bad("max_window_days", "must be at least 1");
        }
        if let Err((field, message)) =
            super::hours::WeekHours::parse(&self.default_hours, "default_hours")
        {
            return bad(&field, &message);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_values_name_the_field() {
        assert!(SchedulingConfig::default().validate().is_ok());
        let c: SchedulingConfig = toml::from_str("slot_minutes = 15").unwrap();
        assert_eq!(c.slot_minutes, 15);
        assert_eq!(c.max_offers, 3);
        assert_eq!(c.default_hours.len(), 5);
        let e = SchedulingConfig {
            max_offers: 0,
            ..SchedulingConfig::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(e.setting, "scheduling.max_offers");
        let mut c = SchedulingConfig::default();
        c.default_hours[1].close = "07:00".into();
        let e = c.validate().unwrap_err();
        assert_eq!(e.setting, "scheduling.default_hours[1].close", "{e}");
        assert!(toml::from_str::<SchedulingConfig>("slots = 3").is_err());
    }
}
