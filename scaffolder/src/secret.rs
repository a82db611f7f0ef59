//! Task secrets, and the [`Redactor`] that scrubs them from everything a
//! task emits (log lines, events, step outputs, dry-run files).
//!
//! A [`Secret`] cannot be logged or serialised by accident: Debug and
//! Display print `***`, it has no `Serialize`, and its value comes out only
//! through [`Secret::expose`], whose callers are few and easy to audit.
//!
//! What the redactor finds, for each secret:
//! - the plain text;
//! - percent-encodings (every non-alphanumeric byte, the
//!   `encodeURIComponent` set, or the `urlencode` filter's, which keeps `/`;
//!   upper- and lower-case hex; `+` for space);
//! - base64 of the secret alone (standard and URL-safe alphabets, padded
//!   and unpadded);
//! - the secret base64-encoded inside a longer text (`user:token` in a Basic
//!   authorisation header): there its encoding depends on its offset modulo
//!   3, so for each of the three offsets the characters that depend only on
//!   the secret's bytes are scrubbed. One or two characters at each end
//!   mix in bytes of the neighbouring text and are left; they carry at most
//!   a few bits of the secret.
//! - fragments: every run of 8 or more bytes that also occurs in the
//!   secret, so a secret written in pieces (two log lines, two fields) is
//!   still hidden when each piece is 8 bytes or longer.
//!
//! Limits: pieces shorter than 8 bytes, other encodings (hex, base32,
//! double encoding, encrypted or hashed forms) and fragments of encoded
//! forms are not found. Secrets shorter than 8 bytes are scrubbed in their
//! exact forms only (plain, percent-encoded, whole base64): their fragments
//! and offset cores would be so short that they match ordinary text
//! everywhere. The empty secret hides nothing and is ignored. Over-redaction
//! is accepted: hiding a harmless run of characters is better than leaking.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;

/// What every redacted occurrence is replaced with (Backstage's marker).
pub const REDACTED: &str = "***";

/// Secrets shorter than this are scrubbed in their exact forms only.
const MIN_FRAGMENT_LEN: usize = 8;

/// What `encodeURIComponent` leaves alone besides ASCII letters and digits.
const URI_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'~')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

/// What the templates' `urlencode` filter (minijinja's, like Jinja's)
/// leaves alone besides ASCII letters and digits: `/` among them, so its
/// form of a secret with `/` is neither of the other two.
const URLENCODE_FILTER: &AsciiSet = &NON_ALPHANUMERIC.remove(b'/').remove(b'.').remove(b'-').remove(b'_');

/// A secret value, such as a token. It never prints itself.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself. Call it only where the value is handed to what
    /// needs it (an expression context, an HTTP header), never to format it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({REDACTED})")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// A task's secrets by name (`secrets.<name>` in expressions).
#[derive(Clone, Debug, Default)]
pub struct Secrets(BTreeMap<String, Secret>);

impl Secrets {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, name: impl Into<String>, secret: Secret) {
        self.0.insert(name.into(), secret);
    }

    pub fn get(&self, name: &str) -> Option<&Secret> {
        self.0.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Secret)> {
        self.0.iter().map(|(name, secret)| (name.as_str(), secret))
    }

    /// The secrets as the `secrets` object of an expression context. This
    /// exposes every value: render from it, never emit it.
    pub(crate) fn exposed_for_expressions(&self) -> Value {
        let exposed: serde_json::Map<String, Value> =
            self.iter().map(|(name, secret)| (name.to_owned(), Value::String(secret.expose().to_owned()))).collect();
        Value::Object(exposed)
    }
}

impl<const N: usize> From<[(&str, &str); N]> for Secrets {
    fn from(pairs: [(&str, &str); N]) -> Self {
        Self(pairs.into_iter().map(|(name, value)| (name.to_owned(), Secret::new(value))).collect())
    }
}

/// Scrubs a task's secrets, in every form it knows, from text and JSON.
#[derive(Clone, Default)]
pub struct Redactor {
    /// Exact texts to hide, longest first.
    patterns: Vec<String>,
    /// The 8-byte windows of every secret of 8 bytes or more.
    fragments: HashSet<Vec<u8>>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Redactor({} patterns)", self.patterns.len())
    }
}

impl Redactor {
    pub fn new(secrets: &Secrets) -> Self {
        let mut patterns = HashSet::new();
        let mut fragments = HashSet::new();
        for (_, secret) in secrets.iter() {
            let value = secret.expose();
            if value.is_empty() {
                continue;
            }
            patterns.extend(exact_forms(value));
            if value.len() >= MIN_FRAGMENT_LEN {
                patterns.extend(offset_base64_cores(value.as_bytes()));
                fragments.extend(value.as_bytes().windows(MIN_FRAGMENT_LEN).map(<[u8]>::to_vec));
            }
        }
        let mut patterns: Vec<String> = patterns.into_iter().filter(|pattern| !pattern.is_empty()).collect();
        patterns.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        Self { patterns, fragments }
    }

    /// The text with every found form of every secret replaced by `***`.
    pub fn redact(&self, text: &str) -> String {
        if self.patterns.is_empty() {
            return text.to_owned();
        }
        let mut hidden = vec![false; text.len()];
        for pattern in &self.patterns {
            let mut start = 0;
            while let Some(found) = text[start..].find(pattern.as_str()) {
                let at = start + found;
                hidden[at..at + pattern.len()].fill(true);
                // Overlapping occurrences matter: "aaXaaXaa" holds "aaXaa" twice.
                start = at + text[at..].chars().next().map_or(1, char::len_utf8);
            }
        }
        if !self.fragments.is_empty() {
            for (at, window) in text.as_bytes().windows(MIN_FRAGMENT_LEN).enumerate() {
                if self.fragments.contains(window) {
                    hidden[at..at + MIN_FRAGMENT_LEN].fill(true);
                }
            }
        }
        let mut redacted = String::with_capacity(text.len());
        let mut in_hidden_run = false;
        for (at, character) in text.char_indices() {
            // A character is hidden when any of its bytes is: a fragment may cut a character in two.
            let is_hidden = hidden[at..at + character.len_utf8()].iter().any(|hidden| *hidden);
            if is_hidden && !in_hidden_run {
                redacted.push_str(REDACTED);
            }
            if !is_hidden {
                redacted.push(character);
            }
            in_hidden_run = is_hidden;
        }
        redacted
    }

    /// The JSON value with every string, and every object key, redacted. A
    /// number is redacted by its text (`secrets.pin | int` makes a number
    /// of a secret): when any part of it is a secret, the whole number
    /// becomes the marker string, since a number cannot hold `***`.
    pub fn redact_json(&self, value: &Value) -> Value {
        match value {
            Value::String(text) => Value::String(self.redact(text)),
            Value::Number(number) => {
                let text = number.to_string();
                if self.redact(&text) == text { value.clone() } else { Value::String(REDACTED.to_owned()) }
            }
            Value::Array(items) => Value::Array(items.iter().map(|item| self.redact_json(item)).collect()),
            Value::Object(fields) => {
                Value::Object(fields.iter().map(|(key, field)| (self.redact(key), self.redact_json(field))).collect())
            }
            other => other.clone(),
        }
    }
}

/// The secret, percent-encoded and base64-encoded on its own.
fn exact_forms(value: &str) -> Vec<String> {
    let mut forms = vec![value.to_owned()];
    for set in [NON_ALPHANUMERIC, URI_COMPONENT, URLENCODE_FILTER] {
        let encoded = utf8_percent_encode(value, set).to_string();
        forms.push(lower_case_hex(&encoded));
        forms.push(encoded);
    }
    let form: String = url::form_urlencoded::byte_serialize(value.as_bytes()).collect();
    forms.push(lower_case_hex(&form));
    forms.push(form);
    for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
        forms.push(engine.encode(value));
    }
    forms
}

fn lower_case_hex(encoded: &str) -> String {
    let mut lowered = String::with_capacity(encoded.len());
    let mut hex_digits_left = 0;
    for character in encoded.chars() {
        if hex_digits_left > 0 {
            lowered.push(character.to_ascii_lowercase());
            hex_digits_left -= 1;
        } else {
            lowered.push(character);
            if character == '%' {
                hex_digits_left = 2;
            }
        }
    }
    lowered
}

/// For each offset of the secret within a 3-byte base64 group, the encoded
/// characters that depend only on the secret's own bytes.
fn offset_base64_cores(secret: &[u8]) -> Vec<String> {
    let mut cores = Vec::new();
    for offset in 0..3 {
        let mut shifted = vec![0u8; offset];
        shifted.extend_from_slice(secret);
        // Characters mixing bits of the unknown bytes before the secret: none, two or three.
        let skip_start = [0, 2, 3][offset];
        // The last character mixes bits of the unknown byte after, unless the groups end evenly.
        let skip_end = usize::from(shifted.len() % 3 != 0);
        for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
            let encoded = engine.encode(&shifted);
            if encoded.len() > skip_start + skip_end {
                cores.push(encoded[skip_start..encoded.len() - skip_end].to_owned());
            }
        }
    }
    cores
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const TOKEN: &str = "ghp_Zx9/+Qy7 s3cr&t=42";

    fn redactor() -> Redactor {
        Redactor::new(&Secrets::from([("token", TOKEN)]))
    }

    #[test]
    fn a_secret_prints_as_stars_in_debug_and_display() {
        let secret = Secret::new("hunter2-very-secret");
        assert_eq!(format!("{secret}"), "***");
        assert_eq!(format!("{secret:?}"), "Secret(***)");
        let secrets = Secrets::from([("token", "hunter2-very-secret")]);
        assert!(!format!("{secrets:?}").contains("hunter2"));
        assert_eq!(secret.expose(), "hunter2-very-secret");
    }

    #[test]
    fn the_plain_secret_is_scrubbed_wherever_it_appears() {
        let text = format!("token={TOKEN}; again:{TOKEN}");
        assert_eq!(redactor().redact(&text), "token=***; again:***");
    }

    #[test]
    fn percent_encoded_forms_are_scrubbed() {
        let redactor = redactor();
        for set in [NON_ALPHANUMERIC, URI_COMPONENT, URLENCODE_FILTER] {
            let encoded = utf8_percent_encode(TOKEN, set).to_string();
            assert_eq!(redactor.redact(&format!("?t={encoded}&x=1")), "?t=***&x=1", "{encoded}");
            assert_eq!(redactor.redact(&format!("?t={}&x=1", lower_case_hex(&encoded))), "?t=***&x=1");
        }
        let form: String = url::form_urlencoded::byte_serialize(TOKEN.as_bytes()).collect();
        assert_eq!(redactor.redact(&format!("t={form}")), "t=***");
    }

    #[test]
    fn base64_of_the_secret_alone_is_scrubbed_in_every_alphabet_and_padding() {
        let redactor = redactor();
        for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
            let encoded = engine.encode(TOKEN);
            assert_eq!(redactor.redact(&format!("b64 {encoded} end")), "b64 *** end", "{encoded}");
        }
    }

    #[test]
    fn base64_of_a_longer_text_containing_the_secret_loses_the_secrets_characters_at_every_offset() {
        let redactor = redactor();
        for prefix in ["", "u:", "us:", "use:", "user:"] {
            for suffix in ["", "!", "!!", "!!!"] {
                let encoded = STANDARD.encode(format!("{prefix}{TOKEN}{suffix}"));
                let redacted = redactor.redact(&format!("Authorization: Basic {encoded}"));
                assert!(redacted.contains(REDACTED), "{prefix}|{suffix}: {redacted}");
                // What is left of the encoding is at most a few characters at each end.
                let left = redacted.trim_start_matches("Authorization: Basic ").replace(REDACTED, "");
                assert!(left.len() <= prefix.len() * 4 / 3 + 4 + suffix.len() * 4 / 3 + 4, "{redacted}");
            }
        }
    }

    #[test]
    fn a_secret_written_in_pieces_of_eight_bytes_or_more_is_scrubbed_piece_by_piece() {
        let redactor = redactor();
        let (first, second) = TOKEN.split_at(TOKEN.len() / 2);
        assert_eq!(redactor.redact(&format!("part one {first}")), "part one ***");
        assert_eq!(redactor.redact(&format!("{second} was part two")), "*** was part two");
    }

    #[test]
    fn json_strings_and_keys_are_redacted_recursively() {
        let value = json!({"a": [TOKEN, {"b": format!("x{TOKEN}")}], TOKEN: 1, "n": 2});
        assert_eq!(redactor().redact_json(&value), json!({"a": ["***", {"b": "x***"}], "***": 1, "n": 2}));
    }

    #[test]
    fn json_numbers_that_show_a_secret_become_the_marker() {
        let redactor = Redactor::new(&Secrets::from([("pin", "12345678"), ("short", "4711")]));
        let value =
            json!({"n": 12345678, "longer": 9_123_456_789_u64, "float": 12345678.5, "short": 4711, "other": 42});
        assert_eq!(
            redactor.redact_json(&value),
            json!({"n": "***", "longer": "***", "float": "***", "short": "***", "other": 42})
        );
    }

    #[test]
    fn short_secrets_are_scrubbed_exactly_but_not_by_fragment() {
        let redactor = Redactor::new(&Secrets::from([("pin", "4711"), ("empty", "")]));
        assert_eq!(redactor.redact("pin 4711, 471, NDcxMQ=="), "pin ***, 471, ***");
        assert_eq!(redactor.redact("nothing to hide"), "nothing to hide");
    }

    #[test]
    fn text_around_multibyte_characters_stays_valid() {
        let redactor = Redactor::new(&Secrets::from([("token", "päss-wörd-sécret")]));
        assert_eq!(redactor.redact("é päss-wörd-sécret ü"), "é *** ü");
        assert_eq!(redactor.redact("é päss-wö"), "é ***");
    }
}
