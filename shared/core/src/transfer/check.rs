//! The invariants records keep together, checked over a whole set or one record at a time.

use super::Record;
use crate::widgets::Port;
use std::collections::{HashMap, HashSet};

/// A broken invariant across records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation(pub String);

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The invariants records must keep together: certificate numbers of each class are 1 to `next_number - 1`
/// with no gap, the class's `issued` is the sum of their amounts, every certificate and certificate request
/// names a class and a certificate that is there; associations are symmetric, name widgets that are there,
/// never a widget itself, never twice, and stay within each widget's slots; no key appears twice.
pub fn check(records: &[Record]) -> Vec<Violation> {
    let mut checker = Checker::default();
    for record in records {
        checker.add(record);
    }
    checker.finish()
}

/// [`check`] one record at a time, for a file or an export streamed through: it keeps what the invariants
/// need (each record's key, classes, certificate numbers, widgets' slots and associations), never a
/// value, a name or an answer's body, so its memory grows with the number of records, not their size.
#[derive(Debug, Default)]
pub struct Checker {
    seen: HashSet<(u8, String, u64)>,
    duplicates: Vec<Violation>,
    classes: HashMap<String, (u64, u64)>,
    certificates: HashMap<String, (Vec<u64>, u64)>,
    requests: Vec<(String, String, u64)>,
    /// serial → (ports, associations)
    widgets: HashMap<String, (String, Vec<(String, String)>)>,
}

impl Checker {
    /// Takes one record into account.
    pub fn add(&mut self, record: &Record) {
        let (kind, key, number) = record.sort_key();
        if !self.seen.insert((kind, key.to_owned(), number)) && self.duplicates.len() < 100 {
            self.duplicates.push(Violation(format!(
                "{} {key:?} appears twice",
                record.kind()
            )));
        }
        match record {
            Record::Class {
                class,
                issued,
                next_number,
                ..
            } => {
                self.classes.insert(class.clone(), (*issued, *next_number));
            }
            Record::Certificate {
                class,
                number,
                amount,
                ..
            } => {
                let entry = self.certificates.entry(class.clone()).or_default();
                entry.0.push(*number);
                entry.1 = entry.1.saturating_add(*amount);
            }
            Record::CertificateRequest {
                id, class, number, ..
            } => self.requests.push((id.clone(), class.clone(), *number)),
            Record::Widget {
                serial,
                ports,
                associations,
                ..
            } => {
                self.widgets
                    .insert(serial.clone(), (ports.clone(), associations.clone()));
            }
            _ => {}
        }
    }

    /// The invariants broken by the records added (at most 100 listed).
    pub fn finish(self) -> Vec<Violation> {
        let Checker {
            duplicates: mut out,
            classes,
            mut certificates,
            requests,
            widgets,
            ..
        } = self;
        let mut bad = |message: String| {
            if out.len() < 100 {
                out.push(Violation(message));
            }
        };
        for (class, (numbers, _)) in &certificates {
            if !classes.contains_key(class) {
                bad(format!(
                    "{} certificates of class {class}, which is not in the file",
                    numbers.len()
                ));
            }
        }
        for (class, (issued, next_number)) in &classes {
            let (mut numbers, sum) = certificates.remove(class).unwrap_or_default();
            numbers.sort_unstable();
            let expected = next_number - 1;
            if numbers.len() as u64 != expected || numbers.iter().zip(1..).any(|(n, i)| *n != i) {
                let first_gap = (1..=expected).find(|n| numbers.binary_search(n).is_err());
                bad(format!(
                    "class {class}: {} certificates for numbers 1 to {expected} (next number {next_number}){}",
                    numbers.len(),
                    first_gap.map_or(String::new(), |n| format!(", number {n} missing"))
                ));
            }
            if sum != *issued {
                bad(format!(
                    "class {class}: issued {issued}, but its certificates add up to {sum}"
                ));
            }
        }
        for (id, class, number) in &requests {
            if classes
                .get(class.as_str())
                .is_none_or(|(_, next)| number >= next)
            {
                bad(format!(
                    "certificate request {id:?} names {class}-{number}, which is not in the file"
                ));
            }
        }
        for (serial, (ports, associations)) in &widgets {
            let mut pairs = HashSet::new();
            for port in Port::ALL {
                let capacity = ports.matches(port.as_str()).count();
                let used = associations
                    .iter()
                    .filter(|(p, _)| p == port.as_str())
                    .count();
                if used > capacity {
                    bad(format!(
                        "widget {serial:?}: {used} associations on port {} with {capacity} slots",
                        port.as_str()
                    ));
                }
            }
            for (port, peer) in associations.iter() {
                if peer == serial {
                    bad(format!("widget {serial:?} is associated with itself"));
                }
                if !pairs.insert((port, peer)) {
                    bad(format!(
                        "widget {serial:?} is associated with {peer:?} on port {port} twice"
                    ));
                }
                match widgets.get(peer.as_str()) {
                    None => bad(format!(
                        "widget {serial:?} is associated with {peer:?}, which is not in the file"
                    )),
                    Some((_, theirs)) => {
                        if !theirs.iter().any(|(p, s)| p == port && s == serial) {
                            bad(format!(
                                "widget {serial:?} is associated with {peer:?} on port {port}, but not the other way"
                            ));
                        }
                    }
                }
            }
        }
        out
    }
}
