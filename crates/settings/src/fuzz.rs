//! Inputs for fuzzing configuration parsers (feature `fuzz`, enabled only by
//! tests): TOML-ish text, and a valid file mutated the ways people and tools
//! break one (a line lost or doubled, a value replaced by one of the wrong kind
//! or out of range, a byte flipped, the file cut short). A parser given these must
//! never panic or hang: it returns a validated value or an error that says why.

use proptest::prelude::*;
use proptest::sample::Index;

/// Values that a setting may be given by mistake: wrong kinds, boundaries,
/// overflows, malformed addresses.
const ODD_VALUES: &[&str] = &[
    "0",
    "-1",
    "1",
    "65535",
    "65536",
    "4096",
    "4097",
    "9223372036854775807",
    "-9223372036854775808",
    "18446744073709551616",
    "1e999",
    "nan",
    "-inf",
    "0.5",
    "true",
    "\"\"",
    "\" \"",
    "\"x\"",
    "\"127.0.0.1\"",
    "\"127.0.0.1:0\"",
    "\"127.0.0.1:99999\"",
    "\"[::1]:80\"",
    "\"10.0.0.0/8\"",
    "\"127.0.0.0/33\"",
    "\"0.0.0.0/0\"",
    "\"::/0\"",
    "\"999.1.1.1/24\"",
    "[]",
    "[1, \"a\"]",
    "{}",
    "{ count = 1 }",
    "{ count = 300 }",
    "{ count = 5000000000 }",
    "{ count = -1 }",
    "{ count = 2, first = \"127.0.1.250\" }",
    "{ addrs = [\"127.0.1.9\", \"127.0.1.9\"] }",
    "1979-05-27T07:32:00Z",
];

/// One line of TOML-ish text: headers, keys with values of every kind, and lines
/// that are not TOML at all.
fn line() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\[[a-z._]{0,12}\\]",
        "\\[\\[[a-z._]{0,12}\\]\\]",
        ("[a-z_.]{1,12}", prop::sample::select(ODD_VALUES)).prop_map(|(k, v)| format!("{k} = {v}")),
        ("[a-z_]{1,12}", any::<i64>()).prop_map(|(k, v)| format!("{k} = {v}")),
        "[a-z_]{1,10} = \"[ -~]{0,24}\"",
        "[ -~]{0,40}",
        any::<String>(),
    ]
}

/// Text that looks like TOML, or nearly.
pub fn toml_ish() -> impl Strategy<Value = String> {
    prop::collection::vec(line(), 0..24).prop_map(|lines| lines.join("\n"))
}

/// One change to a file's lines.
#[derive(Debug, Clone)]
enum Edit {
    /// A line removed.
    Delete(Index),
    /// A line written twice.
    Duplicate(Index),
    /// The value of a `key = value` line replaced.
    Value(Index, String),
    /// A line of TOML-ish text inserted.
    Insert(Index, String),
    /// A byte of a line replaced.
    Byte(Index, Index, u8),
    /// A digit of a line replaced by another: a count, a port or an address
    /// changed, often to one that is still valid.
    Digit(Index, u8),
    /// The text cut short there.
    Truncate(Index),
}

fn edit() -> impl Strategy<Value = Edit> {
    let value = prop_oneof![
        prop::sample::select(ODD_VALUES).prop_map(str::to_owned),
        any::<i64>().prop_map(|n| n.to_string()),
        (0i64..70_000).prop_map(|n| n.to_string()),
        "\"[ -~]{0,24}\"",
    ];
    prop_oneof![
        1 => any::<Index>().prop_map(Edit::Delete),
        1 => any::<Index>().prop_map(Edit::Duplicate),
        3 => (any::<Index>(), value).prop_map(|(i, v)| Edit::Value(i, v)),
        1 => (any::<Index>(), line()).prop_map(|(i, l)| Edit::Insert(i, l)),
        1 => (any::<Index>(), any::<Index>(), any::<u8>()).prop_map(|(i, j, b)| Edit::Byte(i, j, b)),
        4 => (any::<Index>(), b'0'..=b'9').prop_map(|(i, d)| Edit::Digit(i, d)),
        1 => any::<Index>().prop_map(Edit::Truncate),
    ]
}

impl Edit {
    /// Apply the edit to `lines` (never empty).
    fn apply(&self, lines: &mut Vec<String>) {
        if lines.is_empty() {
            lines.push(String::new());
        }
        match self {
            Edit::Delete(i) => {
                lines.remove(i.index(lines.len()));
            }
            Edit::Duplicate(i) => {
                let at = i.index(lines.len());
                lines.insert(at, lines[at].clone());
            }
            Edit::Value(i, value) => {
                // The n-th `key = value` line, if there is one.
                let assignments: Vec<usize> = (0..lines.len()).filter(|&n| lines[n].contains('=')).collect();
                if !assignments.is_empty() {
                    let line = &mut lines[assignments[i.index(assignments.len())]];
                    let key = line.split('=').next().unwrap_or("").to_owned();
                    *line = format!("{key}= {value}");
                }
            }
            Edit::Insert(i, line) => {
                let at = i.index(lines.len() + 1);
                lines.insert(at, line.clone());
            }
            Edit::Byte(i, j, b) => {
                let at = i.index(lines.len());
                let mut bytes = std::mem::take(&mut lines[at]).into_bytes();
                if !bytes.is_empty() {
                    let k = j.index(bytes.len());
                    bytes[k] = *b;
                }
                lines[at] = String::from_utf8_lossy(&bytes).into_owned();
            }
            Edit::Digit(i, d) => {
                let digits: Vec<(usize, usize)> = (0..lines.len())
                    .flat_map(|n| {
                        lines[n]
                            .bytes()
                            .enumerate()
                            .filter(|(_, b)| b.is_ascii_digit())
                            .map(move |(k, _)| (n, k))
                    })
                    .collect();
                if !digits.is_empty() {
                    let (n, k) = digits[i.index(digits.len())];
                    lines[n].replace_range(k..k + 1, &char::from(*d).to_string());
                }
            }
            Edit::Truncate(i) => {
                let at = i.index(lines.len());
                lines.truncate(at + 1);
                let last = &mut lines[at];
                let mut cut = last.len() / 2;
                while !last.is_char_boundary(cut) {
                    cut -= 1;
                }
                last.truncate(cut);
            }
        }
    }
}

/// `base` with one to three edits.
pub fn mutated(base: &'static str) -> impl Strategy<Value = String> {
    prop::collection::vec(edit(), 1..4).prop_map(move |edits| {
        let mut lines: Vec<String> = base.lines().map(str::to_owned).collect();
        for e in &edits {
            e.apply(&mut lines);
        }
        lines.join("\n")
    })
}

/// A proptest configuration running `share` of the cases proptest would run by
/// default (`PROPTEST_CASES`, 256 unless set; `make fuzz` raises it), at least
/// one, and storing no regression files: a failure found becomes a plain test.
pub fn config(share: f64) -> ProptestConfig {
    let base = ProptestConfig::default();
    let cases = ((f64::from(base.cases) * share) as u32).max(1);
    ProptestConfig { cases, failure_persistence: None, ..base }
}

/// Whether a configuration error's message says something: not empty, and
/// naming the origin, the line or the setting.
pub fn says_why(message: &str, origin: &str) -> bool {
    !message.trim().is_empty() && (message.contains(origin) || message.starts_with("invalid setting "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    #[test]
    fn mutations_change_the_text_and_keep_it_text() {
        let base = "a = 1\nb = \"x\"\n[t]\nc = 2";
        let mut runner = TestRunner::deterministic();
        let strategy = mutated(base);
        let changed = (0..64).filter(|_| strategy.new_tree(&mut runner).unwrap().current() != base).count();
        assert!(changed > 48, "only {changed} of 64 mutations changed anything");
    }
}
