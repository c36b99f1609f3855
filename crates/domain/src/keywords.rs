//! Reading a patient's reply for the keywords carriers and the FCC give meaning to (STOP,
//! START, HELP and their Spanish counterparts), and the required replies we answer them with.

use crate::FieldError;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A language we keep keyword tables and required replies in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    En,
    Es,
}

impl Language {
    pub const ALL: [Language; 2] = [Self::En, Self::Es];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::En => "en",
            Self::Es => "es",
        }
    }

    /// The language of a BCP 47 tag such as `es-MX`, when we have tables for it.
    pub fn from_tag(tag: &str) -> Option<Self> {
        let primary = tag.trim().split(['-', '_']).next()?;
        Self::ALL
            .into_iter()
            .find(|l| l.as_str().eq_ignore_ascii_case(primary))
    }
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Language {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Self::from_tag(s).ok_or(())
    }
}

/// Words carriers block on and the FCC treats as revocation whatever the tables say
/// (FCC 24-24; Twilio's defaults), so an organisation's override cannot remove them.
const ALWAYS_OPT_OUT: [&str; 9] = [
    "STOP",
    "STOPALL",
    "UNSUBSCRIBE",
    "CANCEL",
    "END",
    "QUIT",
    "REVOKE",
    "OPT OUT",
    "OPTOUT",
];
const ALWAYS_CANCEL: [&str; 1] = ["CANCEL"];

/// Politeness around a keyword ("STOP please", "Baja por favor"). A closed list: anything
/// else around a keyword makes the reply a sentence for a person to read.
const FILLERS: [&[&str]; 11] = [
    &["PLEASE"],
    &["THANKS"],
    &["THANK", "YOU"],
    &["NOW"],
    &["PLS"],
    &["PLZ"],
    &["THX"],
    &["POR", "FAVOR"],
    &["GRACIAS"],
    &["YA"],
    &["AHORA"],
];

/// One language's keywords. An organisation may replace a table; [`KeywordTable::validate`]
/// keeps the lists from contradicting each other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeywordTable {
    pub language: Language,
    /// Whole-body replies that stop messages.
    pub opt_out: Vec<String>,
    /// Opt-out words that may also mean "cancel my appointment": they stop messages too,
    /// and staff are told the patient may want to cancel.
    pub cancel: Vec<String>,
    /// Whole-body replies that start messages again.
    pub opt_in: Vec<String>,
    /// Plain "yes": an opt-in word for carriers, but also the answer to a pending question.
    pub yes: Vec<String>,
    pub help: Vec<String>,
    /// Phrases that may be a revocation in a longer reply ("remove me"): never acted on,
    /// only flagged so a person reads the reply.
    pub revocation_phrases: Vec<String>,
}

fn words(list: &[&str]) -> Vec<String> {
    list.iter().map(|w| (*w).to_owned()).collect()
}

impl KeywordTable {
    pub fn defaults(language: Language) -> Self {
        match language {
            Language::En => Self::english(),
            Language::Es => Self::spanish(),
        }
    }

    /// CTIA and Twilio's defaults, with the FCC 2024 additions.
    pub fn english() -> Self {
        Self {
            language: Language::En,
            opt_out: words(&[
                "STOP",
                "STOPALL",
                "UNSUBSCRIBE",
                "END",
                "QUIT",
                "REVOKE",
                "OPT OUT",
                "OPTOUT",
            ]),
            cancel: words(&["CANCEL"]),
            opt_in: words(&["START", "UNSTOP"]),
            yes: words(&["YES"]),
            help: words(&["HELP", "INFO"]),
            revocation_phrases: words(&[
                "REMOVE ME",
                "DONT TEXT",
                "DO NOT TEXT",
                "NO MORE TEXTS",
                "NO MORE MESSAGES",
                "TAKE ME OFF",
                "LEAVE ME ALONE",
            ]),
        }
    }

    /// Spanish. `ALTA` ("sign me up") is left out: in a clinic it also means "discharged".
    pub fn spanish() -> Self {
        Self {
            language: Language::Es,
            opt_out: words(&[
                "ALTO",
                "PARA",
                "PARAR",
                "DETENER",
                "BAJA",
                "DAR DE BAJA",
                "DESUSCRIBIR",
            ]),
            cancel: words(&["CANCELAR"]),
            opt_in: words(&["COMENZAR", "INICIAR", "REANUDAR"]),
            yes: words(&["SÍ"]),
            help: words(&["AYUDA", "INFO"]),
            revocation_phrases: words(&[
                "NO MAS MENSAJES",
                "NO ME ENVIEN",
                "NO ME MANDEN",
                "NO QUIERO MENSAJES",
                "QUITENME",
            ]),
        }
    }

    /// English then Spanish: the order `classify` tries them in when both hold a word.
    pub fn all_defaults() -> Vec<Self> {
        Language::ALL.into_iter().map(Self::defaults).collect()
    }

    /// Refuses blank words, fillers used as keywords, and a word in two classes (a reply
    /// must never both stop and start messages).
    pub fn validate(&self) -> Result<(), FieldError> {
        let classes: [(&str, &[String]); 5] = [
            ("opt_out", &self.opt_out),
            ("cancel", &self.cancel),
            ("opt_in", &self.opt_in),
            ("yes", &self.yes),
            ("help", &self.help),
        ];
        let mut seen: Vec<(Vec<String>, &str)> = Vec::new();
        for (class, list) in classes {
            for (i, word) in list.iter().enumerate() {
                let field = format!("{class}[{i}]");
                let tokens = tokens(word);
                if tokens.is_empty() {
                    return Err(FieldError::new(
                        field,
                        "invalid_keyword",
                        "a keyword needs at least one letter or digit",
                    ));
                }
                if strip_fillers(&tokens).is_empty() {
                    return Err(FieldError::new(
                        field,
                        "invalid_keyword",
                        "a keyword cannot be a courtesy word such as please or thanks",
                    ));
                }
                let group = match class {
                    "opt_out" | "cancel" => "opt-out",
                    "opt_in" | "yes" => "opt-in",
                    _ => "help",
                };
                if let Some((_, other)) = seen.iter().find(|(t, g)| *t == tokens && *g != group) {
                    return Err(FieldError::new(
                        field,
                        "conflicting_keyword",
                        format!("this keyword is already an {other} keyword"),
                    ));
                }
                seen.push((tokens, group));
            }
        }
        Ok(())
    }
}

/// What a patient's reply asks for. Keyword intents carry the language they matched in, so
/// the required reply goes out in the patient's words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "intent", rename_all = "snake_case")]
pub enum Intent {
    /// Stop messages. `also_cancel_request`: the word (CANCEL, CANCELAR) may also mean
    /// "cancel my appointment", so staff should see an inbox item.
    OptOut {
        keyword: String,
        language: Language,
        also_cancel_request: bool,
    },
    OptIn {
        keyword: String,
        language: Language,
    },
    Help {
        language: Language,
    },
    /// A plain yes: re-subscribes a number that opted out, else may answer a pending question.
    Yes {
        language: Language,
    },
    /// Anything else. `possible_opt_out`: an opt-out keyword or revocation phrase appears
    /// inside it, so a person should read it (FCC: revocation "in any reasonable manner").
    Other {
        possible_opt_out: bool,
    },
}

impl Intent {
    /// Stable name, e.g. for the inbound message's routing outcome.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::OptOut { .. } => "opt_out",
            Self::OptIn { .. } => "opt_in",
            Self::Help { .. } => "help",
            Self::Yes { .. } => "yes",
            Self::Other { .. } => "other",
        }
    }
}

/// Reads a reply against `tables`, tried in order (put the patient's language first).
///
/// The whole body must be the keyword, once surrounding punctuation, case, accents and the
/// closed list of courtesy words are set aside. Opt-out is tried first and wins any tie, and
/// the words in [`ALWAYS_OPT_OUT`] are honoured even if no table lists them.
pub fn classify(body: &str, tables: &[KeywordTable]) -> Intent {
    let all = tokens(body);
    let mut core = strip_fillers(&all);
    // "STOP STOP", "stop!!! stop": one keyword, said louder.
    if core.iter().all(|t| *t == core[0]) {
        core = &core[..core.len().min(1)];
    }
    if core.is_empty() {
        return Intent::Other {
            possible_opt_out: false,
        };
    }
    let is = |word: &str| tokens(word) == core;

    for t in tables {
        if let Some(w) = t.cancel.iter().find(|w| is(w)) {
            return opt_out(w, t.language, true);
        }
        if let Some(w) = t.opt_out.iter().find(|w| is(w)) {
            return opt_out(w, t.language, false);
        }
    }
    if let Some(w) = ALWAYS_OPT_OUT.iter().find(|w| is(w)) {
        return opt_out(w, Language::En, ALWAYS_CANCEL.contains(w));
    }
    for t in tables {
        if t.yes.iter().any(|w| is(w)) {
            return Intent::Yes {
                language: t.language,
            };
        }
    }
    for t in tables {
        if let Some(w) = t.opt_in.iter().find(|w| is(w)) {
            return Intent::OptIn {
                keyword: w.to_uppercase(),
                language: t.language,
            };
        }
    }
    for t in tables {
        if t.help.iter().any(|w| is(w)) {
            return Intent::Help {
                language: t.language,
            };
        }
    }
    Intent::Other {
        possible_opt_out: mentions_opt_out(&all, tables),
    }
}

fn opt_out(word: &str, language: Language, also_cancel_request: bool) -> Intent {
    Intent::OptOut {
        keyword: word.to_uppercase(),
        language,
        also_cancel_request,
    }
}

/// Opt-out words too common inside Spanish sentences ("para mañana") to flag them there.
const NOT_FLAGGED_INSIDE: [&str; 1] = ["PARA"];

fn mentions_opt_out(all: &[String], tables: &[KeywordTable]) -> bool {
    let contains = |word: &str| {
        let needle = tokens(word);
        let too_common =
            matches!(needle.as_slice(), [one] if NOT_FLAGGED_INSIDE.contains(&one.as_str()));
        !needle.is_empty()
            && !too_common
            && all.windows(needle.len()).any(|w| w == needle.as_slice())
    };
    ALWAYS_OPT_OUT.iter().any(|w| contains(w))
        || tables.iter().any(|t| {
            t.opt_out
                .iter()
                .chain(&t.cancel)
                .chain(&t.revocation_phrases)
                .any(|w| contains(w))
        })
}

/// Upper-case words with accents folded; punctuation, emoji and spaces separate words,
/// apostrophes join them ("don't" is `DONT`).
fn tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    for c in text.chars() {
        if is_combining_mark(c) || matches!(c, '\'' | '\u{2019}' | '\u{02BC}') {
            continue;
        }
        if c.is_alphanumeric() {
            push_folded(&mut word, c);
        } else if !word.is_empty() {
            out.push(std::mem::take(&mut word));
        }
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

fn strip_fillers(tokens: &[String]) -> &[String] {
    let mut rest = tokens;
    loop {
        let before = rest.len();
        for filler in FILLERS {
            if rest.len() >= filler.len() && rest[..filler.len()].iter().eq(filler.iter()) {
                rest = &rest[filler.len()..];
            }
            if rest.len() >= filler.len()
                && rest[rest.len() - filler.len()..].iter().eq(filler.iter())
            {
                rest = &rest[..rest.len() - filler.len()];
            }
        }
        if rest.len() == before {
            return rest;
        }
    }
}

fn is_combining_mark(c: char) -> bool {
    matches!(c, '\u{0300}'..='\u{036F}')
}

/// Folds the accented Latin letters patients type (`sí`, `Sí`, `ÁLTO`) to their base letter.
fn push_folded(word: &mut String, c: char) {
    for lower in c.to_lowercase() {
        let base = match lower {
            'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'ā' | 'ă' | 'ą' => 'a',
            'ç' | 'ć' | 'č' => 'c',
            'è' | 'é' | 'ê' | 'ë' | 'ē' | 'ė' | 'ę' | 'ě' => 'e',
            'ì' | 'í' | 'î' | 'ï' | 'ī' | 'į' | 'ı' => 'i',
            'ñ' | 'ń' | 'ň' => 'n',
            'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' | 'ō' | 'ő' => 'o',
            'ù' | 'ú' | 'û' | 'ü' | 'ū' | 'ů' | 'ű' | 'ų' => 'u',
            'ý' | 'ÿ' => 'y',
            other => other,
        };
        word.extend(base.to_uppercase());
    }
}

/// Which required reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplyKind {
    /// The one confirmation after an opt-out; nothing else follows it.
    OptOut,
    /// After START / YES re-subscribes a number.
    OptIn,
    Help,
    /// The opt-in confirmation a recurring programme sends when a patient is enrolled.
    Welcome,
}

impl ReplyKind {
    pub const ALL: [ReplyKind; 4] = [Self::OptOut, Self::OptIn, Self::Help, Self::Welcome];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::OptOut => "opt_out",
            Self::OptIn => "opt_in",
            Self::Help => "help",
            Self::Welcome => "welcome",
        }
    }
}

/// The replies carriers (CTIA) require, in one language, with `{programme}` and `{help}`
/// placeholders. An organisation may override them; [`RequiredReplies::validate`] checks
/// what CTIA requires is still there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequiredReplies {
    pub language: Language,
    pub opt_out: String,
    pub opt_in: String,
    pub help: String,
    pub welcome: String,
}

impl RequiredReplies {
    pub fn defaults(language: Language) -> Self {
        match language {
            Language::En => Self::english(),
            Language::Es => Self::spanish(),
        }
    }

    pub fn english() -> Self {
        Self {
            language: Language::En,
            opt_out: "{programme}: You are unsubscribed and will get no more messages. \
                      Reply START to resubscribe."
                .into(),
            opt_in: "{programme}: You are subscribed again. Msg frequency varies. \
                     Msg & data rates may apply. Reply HELP for help. Reply STOP to opt out."
                .into(),
            help: "{programme}: Help at {help}. Msg frequency varies. \
                   Msg & data rates may apply. Reply STOP to opt out."
                .into(),
            welcome: "{programme}: Texts about your care and visits. Msg frequency varies. \
                      Msg & data rates may apply. Reply HELP for help. Reply STOP to opt out."
                .into(),
        }
    }

    /// "Responda ALTO para dejar de recibir mensajes", not "… para cancelar": a patient who
    /// wants to cancel a visit must not be taught that ALTO does it.
    pub fn spanish() -> Self {
        Self {
            language: Language::Es,
            opt_out: "{programme}: Se ha dado de baja y no recibirá más mensajes. \
                      Responda COMENZAR para volver a suscribirse."
                .into(),
            opt_in: "{programme}: Se ha vuelto a suscribir. Frecuencia de mensajes varía. \
                     Pueden aplicarse tarifas de mensajes y datos. Responda AYUDA para \
                     obtener ayuda. Responda ALTO para dejar de recibir mensajes."
                .into(),
            help: "{programme}: Ayuda en {help}. Frecuencia de mensajes varía. \
                   Pueden aplicarse tarifas de mensajes y datos. \
                   Responda ALTO para dejar de recibir mensajes."
                .into(),
            welcome: "{programme}: Mensajes sobre su atención y sus citas. Frecuencia de \
                      mensajes varía. Pueden aplicarse tarifas de mensajes y datos. Responda \
                      AYUDA para obtener ayuda. Responda ALTO para dejar de recibir mensajes."
                .into(),
        }
    }

    pub fn template(&self, kind: ReplyKind) -> &str {
        match kind {
            ReplyKind::OptOut => &self.opt_out,
            ReplyKind::OptIn => &self.opt_in,
            ReplyKind::Help => &self.help,
            ReplyKind::Welcome => &self.welcome,
        }
    }

    /// The reply with `{programme}` and `{help}` filled in. One pass, so a programme name
    /// that happens to contain `{help}` is printed as written.
    pub fn render(&self, kind: ReplyKind, programme: &str, help_contact: &str) -> String {
        let mut out = String::new();
        let mut rest = self.template(kind);
        while let Some(at) = rest.find('{') {
            out.push_str(&rest[..at]);
            let tail = &rest[at..];
            if let Some(after) = tail.strip_prefix("{programme}") {
                out.push_str(programme);
                rest = after;
            } else if let Some(after) = tail.strip_prefix("{help}") {
                out.push_str(help_contact);
                rest = after;
            } else {
                out.push('{');
                rest = &tail[1..];
            }
        }
        out.push_str(rest);
        out
    }

    /// What CTIA requires of each reply: the programme name in all, the help contact in
    /// HELP, STOP instructions where the patient keeps receiving messages, and never an
    /// instruction to reply CANCEL.
    pub fn validate(&self) -> Result<(), FieldError> {
        for kind in ReplyKind::ALL {
            let text = self.template(kind);
            let field = kind.as_str();
            if !text.contains("{programme}") {
                return Err(FieldError::new(
                    field,
                    "missing_placeholder",
                    "the reply must name the programme ({programme})",
                ));
            }
            if kind == ReplyKind::Help && !text.contains("{help}") {
                return Err(FieldError::new(
                    field,
                    "missing_placeholder",
                    "the help reply must give a help contact ({help})",
                ));
            }
            if template_asks_for_cancel(text) {
                return Err(cancel_error(field));
            }
            if kind != ReplyKind::OptOut && !gives_stop_instruction(text) {
                return Err(FieldError::new(
                    field,
                    "missing_stop_instruction",
                    "the reply must say how to opt out, e.g. Reply STOP to opt out",
                ));
            }
        }
        Ok(())
    }
}

/// The error for a template refused by [`template_asks_for_cancel`].
pub fn cancel_error(field: &str) -> FieldError {
    FieldError::new(
        field,
        "asks_for_cancel",
        "a message must not ask patients to reply CANCEL: carriers treat it as an opt-out \
         from every text. Ask for another word, e.g. reply C to cancel the visit",
    )
}

const INSTRUCTION_VERBS: [&str; 20] = [
    "REPLY",
    "RESPOND",
    "TEXT",
    "TXT",
    "SEND",
    "TYPE",
    "SMS",
    "WRITE",
    "RESPONDA",
    "RESPONDE",
    "RESPONDER",
    "CONTESTE",
    "CONTESTA",
    "ENVIE",
    "ENVIA",
    "ENVIAR",
    "ESCRIBA",
    "ESCRIBE",
    "MANDE",
    "MANDA",
];
/// Words between a verb and its keyword: "reply with the word X", "responda con la palabra X".
const INSTRUCTION_SKIPS: [&str; 13] = [
    "BACK", "WITH", "THE", "WORD", "US", "A", "AN", "CON", "LA", "PALABRA", "EL", "NOS", "UN",
];
const INSTRUCTION_CONNECTORS: [&str; 5] = ["OR", "AND", "O", "U", "Y"];
const CANCEL_WORDS: [&str; 2] = ["CANCEL", "CANCELAR"];

/// Whether a template asks patients to reply CANCEL (or CANCELAR). Carriers read that reply
/// as STOP, so a patient cancelling one visit would silently stop every text.
///
/// Caught: the word in a reply instruction ("Reply C to confirm or CANCEL to cancel",
/// "text cancel", "responda CANCELAR"), written in capitals, or in quotes. Not caught, and
/// fine: "To cancel your visit, call us".
pub fn template_asks_for_cancel(text: &str) -> bool {
    let lexemes = lex(text);
    let shown = lexemes.iter().any(|l| match l {
        Lexeme::Word { text, caps, quoted } => {
            (*caps || *quoted) && CANCEL_WORDS.contains(&text.as_str())
        }
        _ => false,
    });
    shown
        || instructed_words(&lexemes)
            .iter()
            .any(|w| CANCEL_WORDS.contains(&w.as_str()))
}

/// Whether a template tells patients which word stops messages ("Reply STOP to opt out").
fn gives_stop_instruction(text: &str) -> bool {
    let stops: Vec<String> = Language::ALL
        .into_iter()
        .flat_map(|l| KeywordTable::defaults(l).opt_out)
        .map(|w| w.to_uppercase())
        .collect();
    instructed_words(&lex(text))
        .iter()
        .any(|w| stops.contains(w))
}

#[derive(Debug)]
enum Lexeme {
    Word {
        text: String,
        /// Written in capitals (two letters or more): templates show keywords this way.
        caps: bool,
        quoted: bool,
    },
    Comma,
    SentenceEnd,
}

fn lex(text: &str) -> Vec<Lexeme> {
    let mut out = Vec::new();
    let mut raw = String::new();
    // A quote counts only when it touches the word: `'cancel'`, not `"card" cancel`.
    let mut quoted = false;
    for c in text.chars() {
        if c.is_alphanumeric() || is_combining_mark(c) || (c == '\'' && !raw.is_empty()) {
            raw.push(c);
            continue;
        }
        push_word(&mut out, &mut raw, quoted);
        quoted = matches!(
            c,
            '"' | '\'' | '\u{201C}' | '\u{2018}' | '\u{00AB}' | '\u{201E}'
        );
        match c {
            ',' => out.push(Lexeme::Comma),
            '.' | '!' | '?' | ';' | '\n' | '\u{00BF}' | '\u{00A1}' => out.push(Lexeme::SentenceEnd),
            _ => {}
        }
    }
    push_word(&mut out, &mut raw, quoted);
    out
}

fn push_word(out: &mut Vec<Lexeme>, raw: &mut String, quoted: bool) {
    let letters: Vec<char> = raw.chars().filter(|c| c.is_alphabetic()).collect();
    let caps = letters.len() >= 2 && letters.iter().all(|c| c.is_uppercase());
    for text in tokens(raw) {
        out.push(Lexeme::Word { text, caps, quoted });
    }
    raw.clear();
}

/// The words a template asks patients to send: the word after a reply verb, and after each
/// comma or "or" that follows it in the same sentence.
fn instructed_words(lexemes: &[Lexeme]) -> Vec<String> {
    let (mut out, mut in_instruction, mut expect) = (Vec::new(), false, false);
    for l in lexemes {
        match l {
            Lexeme::SentenceEnd => (in_instruction, expect) = (false, false),
            Lexeme::Comma => expect = in_instruction,
            Lexeme::Word { text, .. } => {
                let w = text.as_str();
                if INSTRUCTION_VERBS.contains(&w) {
                    (in_instruction, expect) = (true, true);
                } else if expect && !INSTRUCTION_SKIPS.contains(&w) {
                    out.push(text.clone());
                    expect = false;
                } else if in_instruction && INSTRUCTION_CONNECTORS.contains(&w) {
                    expect = true;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(body: &str) -> Intent {
        classify(body, &KeywordTable::all_defaults())
    }

    fn is_opt_out(body: &str) -> bool {
        matches!(read(body), Intent::OptOut { .. })
    }

    #[test]
    fn stop_with_courtesy_or_punctuation_still_stops() {
        for body in [
            "Stop!",
            "STOP please",
            "stop. thank you",
            " sToP ",
            "Stop now",
            "please stop",
            "STOP 🛑",
            "Opt-out",
            "opt out",
            "Unsubscribe.",
            "quit",
            "REVOKE",
            "STOP STOP",
            "stop!!! STOP",
        ] {
            assert!(
                is_opt_out(body),
                "{body:?} should opt out, got {:?}",
                read(body)
            );
        }
    }

    #[test]
    fn spanish_opt_outs_stop_and_are_answered_in_spanish() {
        for body in [
            "ALTO",
            "Baja por favor",
            "parar",
            "Alto, gracias",
            "dar de baja",
        ] {
            match read(body) {
                Intent::OptOut { language, .. } => assert_eq!(language, Language::Es, "{body}"),
                other => panic!("{body:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn cancel_stops_messages_and_tells_staff_about_the_appointment() {
        assert_eq!(
            read("CANCEL"),
            Intent::OptOut {
                keyword: "CANCEL".into(),
                language: Language::En,
                also_cancel_request: true,
            }
        );
        assert_eq!(
            read("Cancelar por favor"),
            Intent::OptOut {
                keyword: "CANCELAR".into(),
                language: Language::Es,
                also_cancel_request: true,
            }
        );
        assert_eq!(
            read("stop"),
            Intent::OptOut {
                keyword: "STOP".into(),
                language: Language::En,
                also_cancel_request: false,
            }
        );
    }

    #[test]
    fn sentences_that_mention_a_keyword_go_to_a_person() {
        for (body, flagged) in [
            ("Cancel my appointment tomorrow", true),
            ("End of day works", true),
            ("Please don't stop texting me", true),
            ("stopped by the clinic", false),
            ("Can I come at 3 instead?", false),
            ("Please remove me from this list", true),
            ("No más mensajes por favor", true),
            ("Sí, para mañana está bien", false),
        ] {
            assert_eq!(
                read(body),
                Intent::Other {
                    possible_opt_out: flagged
                },
                "{body:?}"
            );
        }
    }

    #[test]
    fn courtesy_alone_is_not_a_keyword() {
        for body in ["Thanks!", "gracias", "👍", "", "  ", "please"] {
            assert_eq!(
                read(body),
                Intent::Other {
                    possible_opt_out: false
                },
                "{body:?}"
            );
        }
    }

    #[test]
    fn start_and_unstop_resubscribe() {
        assert_eq!(
            read("START"),
            Intent::OptIn {
                keyword: "START".into(),
                language: Language::En
            }
        );
        assert_eq!(
            read("unstop"),
            Intent::OptIn {
                keyword: "UNSTOP".into(),
                language: Language::En
            }
        );
        assert_eq!(
            read("Comenzar"),
            Intent::OptIn {
                keyword: "COMENZAR".into(),
                language: Language::Es
            }
        );
    }

    #[test]
    fn yes_and_si_are_left_to_the_caller() {
        assert_eq!(
            read("yes"),
            Intent::Yes {
                language: Language::En
            }
        );
        assert_eq!(
            read("Yes please!"),
            Intent::Yes {
                language: Language::En
            }
        );
        for body in ["Sí", "si", "SI", "sí.", "si\u{301}"] {
            assert_eq!(
                read(body),
                Intent::Yes {
                    language: Language::Es
                },
                "{body:?}"
            );
        }
    }

    #[test]
    fn help_in_either_language() {
        assert_eq!(
            read("HELP"),
            Intent::Help {
                language: Language::En
            }
        );
        assert_eq!(
            read("info"),
            Intent::Help {
                language: Language::En
            }
        );
        assert_eq!(
            read("ayuda"),
            Intent::Help {
                language: Language::Es
            }
        );
        // A Spanish-speaking patient's INFO is answered in Spanish when Spanish is tried first.
        let spanish_first = [KeywordTable::spanish(), KeywordTable::english()];
        assert_eq!(
            classify("info", &spanish_first),
            Intent::Help {
                language: Language::Es
            }
        );
    }

    #[test]
    fn an_organisation_cannot_switch_off_stop() {
        let mut table = KeywordTable::english();
        table.opt_out.clear();
        table.cancel.clear();
        assert!(matches!(
            classify("STOP", &[table.clone()]),
            Intent::OptOut { .. }
        ));
        assert_eq!(
            classify("cancel", &[table]),
            Intent::OptOut {
                keyword: "CANCEL".into(),
                language: Language::En,
                also_cancel_request: true,
            }
        );
    }

    #[test]
    fn an_organisation_can_add_its_own_words() {
        let mut table = KeywordTable::english();
        table.opt_out.push("NO MORE".into());
        assert!(matches!(
            classify("no more!", &[table]),
            Intent::OptOut { .. }
        ));
    }

    #[test]
    fn a_table_cannot_make_one_word_both_stop_and_start() {
        assert!(KeywordTable::english().validate().is_ok());
        assert!(KeywordTable::spanish().validate().is_ok());
        let mut table = KeywordTable::english();
        table.opt_in.push("stop".into());
        let err = table.validate().unwrap_err();
        assert_eq!(
            (err.code, err.field.as_str()),
            ("conflicting_keyword", "opt_in[2]")
        );
        let mut table = KeywordTable::spanish();
        table.opt_out.push("por favor".into());
        assert_eq!(table.validate().unwrap_err().code, "invalid_keyword");
    }

    #[test]
    fn languages_come_from_bcp47_tags() {
        assert_eq!(Language::from_tag("es-MX"), Some(Language::Es));
        assert_eq!(Language::from_tag("EN"), Some(Language::En));
        assert_eq!(Language::from_tag("fr"), None);
    }

    #[test]
    fn every_default_reply_names_the_programme_and_says_how_to_stop() {
        for lang in Language::ALL {
            let replies = RequiredReplies::defaults(lang);
            assert_eq!(replies.validate(), Ok(()), "{lang}");
            for kind in ReplyKind::ALL {
                let text = replies.render(kind, "Valley Clinic", "(555) 010-0100");
                assert!(
                    text.starts_with("Valley Clinic: "),
                    "{lang} {kind:?}: {text}"
                );
                assert!(!text.contains('{'), "{text}");
                if kind != ReplyKind::OptOut {
                    let stop = match lang {
                        Language::En => "Reply STOP to opt out",
                        Language::Es => "Responda ALTO para dejar de recibir mensajes",
                    };
                    assert!(text.contains(stop), "{lang} {kind:?}: {text}");
                    let (freq, rates) = match lang {
                        Language::En => ("Msg frequency varies", "Msg & data rates may apply"),
                        Language::Es => (
                            "Frecuencia de mensajes varía",
                            "Pueden aplicarse tarifas de mensajes y datos",
                        ),
                    };
                    assert!(text.contains(freq) && text.contains(rates), "{text}");
                }
            }
            let help = replies.render(ReplyKind::Help, "Valley Clinic", "(555) 010-0100");
            assert!(help.contains("(555) 010-0100"), "{help}");
        }
    }

    #[test]
    fn no_default_reply_asks_for_cancel() {
        for lang in Language::ALL {
            for kind in ReplyKind::ALL {
                let text = RequiredReplies::defaults(lang).render(kind, "Clinic", "555");
                assert!(!template_asks_for_cancel(&text), "{text}");
                let words = tokens(&text);
                assert!(
                    !words.iter().any(|w| w == "CANCEL" || w == "CANCELAR"),
                    "{text}"
                );
            }
        }
    }

    #[test]
    fn english_replies_fit_one_segment_for_a_short_programme_name() {
        for kind in ReplyKind::ALL {
            let text = RequiredReplies::english().render(kind, "Valley Family Clinic", "555-0100");
            assert_eq!(crate::message_body::segments(&text).segments, 1, "{text}");
        }
    }

    #[test]
    fn templates_asking_to_reply_cancel_are_caught() {
        for text in [
            "Reply C to confirm or CANCEL to cancel",
            "Text cancel to 12345 to cancel your visit",
            "Reply with the word cancel",
            "Reply C to confirm, CANCEL to cancel.",
            "Responda CANCELAR para anular su cita",
            "Reply 'cancel' if you can't come",
            "To cancel reply CANCEL",
        ] {
            assert!(template_asks_for_cancel(text), "{text}");
            assert_eq!(cancel_error("body").code, "asks_for_cancel");
        }
        for text in [
            "To cancel your appointment, call (555) 010-0100.",
            "Reply C to confirm or R to reschedule. Reply STOP to opt out",
            "Your visit was cancelled. Call us to rebook.",
            "Responda ALTO para dejar de recibir mensajes",
        ] {
            assert!(!template_asks_for_cancel(text), "{text}");
        }
    }

    #[test]
    fn a_reply_override_that_drops_stop_is_refused() {
        let mut replies = RequiredReplies::english();
        replies.welcome = "{programme}: Welcome! Msg frequency varies.".into();
        assert_eq!(
            replies.validate().unwrap_err().code,
            "missing_stop_instruction"
        );
        let mut replies = RequiredReplies::english();
        replies.help = "{programme}: Reply CANCEL to stop.".into();
        assert_eq!(replies.validate().unwrap_err().code, "missing_placeholder");
        let mut replies = RequiredReplies::english();
        replies.help = "{programme}: Help at {help}. Reply CANCEL to stop.".into();
        assert_eq!(replies.validate().unwrap_err().code, "asks_for_cancel");
    }

    #[test]
    fn render_fills_placeholders_once() {
        let replies = RequiredReplies::english();
        let text = replies.render(ReplyKind::Help, "Clinic {help}", "555");
        assert!(text.starts_with("Clinic {help}: Help at 555."), "{text}");
    }
}
