//! An organisation's messaging settings: its programme name and help contact for the
//! replies carriers require, quiet hours, frequency caps, keyword and reply overrides, the
//! welcome message and the auto-reply loop guard. Defaults are what a clinic would want
//! on day one.

use crate::FieldError;
use crate::frequency::FrequencyPolicy;
use crate::keywords::{KeywordTable, Language, RequiredReplies};
use crate::send_window::SendWindows;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MessagingSettings {
    /// Named in every required reply; the organisation's name when absent.
    pub programme_name: Option<String>,
    /// Where HELP sends patients (a phone number or a URL); the first location's phone when absent.
    pub help_contact: Option<String>,
    /// Quiet hours in the patient's time zone: a default window and per-kind windows.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub send_windows: SendWindows,
    /// Also hold automated messages to the patient's usual location's opening hours and closures.
    pub use_location_hours: bool,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub frequency: FrequencyPolicy,
    /// Replacement keyword tables, per language (the defaults apply to other languages).
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Object>))]
    pub keywords: Vec<KeywordTable>,
    /// Replacement required replies, per language.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Object>))]
    pub required_replies: Vec<RequiredReplies>,
    /// Send a one-time welcome (programme, frequency, HELP, STOP) before the first
    /// automated message to a number.
    pub welcome: bool,
    /// Most automatic replies (keyword answers) to one number in an hour, so two
    /// auto-responders cannot talk forever.
    pub auto_replies_per_hour: u32,
}

impl Default for MessagingSettings {
    fn default() -> Self {
        Self {
            programme_name: None,
            help_contact: None,
            send_windows: SendWindows::default(),
            use_location_hours: false,
            frequency: FrequencyPolicy::default(),
            keywords: Vec::new(),
            required_replies: Vec::new(),
            welcome: true,
            auto_replies_per_hour: 5,
        }
    }
}

impl MessagingSettings {
    pub fn validate(&self) -> Result<(), FieldError> {
        for (i, t) in self.keywords.iter().enumerate() {
            t.validate()
                .map_err(|e| e.under(&format!("keywords[{i}]")))?;
        }
        for (i, r) in self.required_replies.iter().enumerate() {
            r.validate()
                .map_err(|e| e.under(&format!("required_replies[{i}]")))?;
        }
        if self.frequency.safety_cap_per_day == 0 {
            return Err(FieldError::new(
                "frequency.safety_cap_per_day",
                "invalid_field",
                "the safety cap must allow at least one message a day",
            ));
        }
        Ok(())
    }

    /// Keyword tables to read a reply with, the patient's language first.
    pub fn keyword_tables(&self, first: Language) -> Vec<KeywordTable> {
        let table = |lang: Language| {
            self.keywords
                .iter()
                .find(|t| t.language == lang)
                .cloned()
                .unwrap_or_else(|| KeywordTable::defaults(lang))
        };
        let other = if first == Language::En {
            Language::Es
        } else {
            Language::En
        };
        vec![table(first), table(other)]
    }

    pub fn replies(&self, language: Language) -> RequiredReplies {
        self.required_replies
            .iter()
            .find(|r| r.language == language)
            .cloned()
            .unwrap_or_else(|| RequiredReplies::defaults(language))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_send_a_welcome_cap_at_three_and_guard_loops() {
        let s = MessagingSettings::default();
        assert!(s.welcome);
        assert_eq!(s.frequency.safety_cap_per_day, 3);
        assert_eq!(s.auto_replies_per_hour, 5);
        assert!(s.validate().is_ok());
        let parsed: MessagingSettings = serde_json::from_str("{}").unwrap();
        assert_eq!(parsed, s, "an empty document means the defaults");
    }

    #[test]
    fn overrides_apply_to_their_language_only() {
        let mut spanish = RequiredReplies::spanish();
        spanish.help = "{programme}: Llame al {help}. Frecuencia de mensajes varía. Pueden aplicarse tarifas de mensajes y datos. Responda ALTO para dejar de recibir mensajes.".into();
        let s = MessagingSettings {
            required_replies: vec![spanish.clone()],
            ..MessagingSettings::default()
        };
        assert_eq!(s.replies(Language::Es), spanish);
        assert_eq!(s.replies(Language::En), RequiredReplies::english());
        assert_eq!(s.keyword_tables(Language::Es)[0].language, Language::Es);
    }

    #[test]
    fn a_reply_that_asks_patients_to_reply_cancel_is_refused() {
        let mut english = RequiredReplies::english();
        english.help = "{programme}: Reply CANCEL to cancel your visit. Help at {help}. Msg frequency varies. Msg & data rates may apply. Reply STOP to opt out.".into();
        let s = MessagingSettings {
            required_replies: vec![english],
            ..MessagingSettings::default()
        };
        let err = s.validate().unwrap_err();
        assert!(err.field.starts_with("required_replies[0]"), "{err:?}");
    }
}
