//! Widgets (CONTRACT.md §3): 1 to 3 port slots of types P, R and Q; two widgets associate on a port type, each giving
//! one free slot of that type. Invariants at every instant: used slots ≤ slots of that type, every association
//! is symmetric, never twice on the same type for one pair, and no association points at a missing widget.
//!
//! Stores make each claim one atomic step on both widgets (DynamoDB: one `TransactWriteItems` with capacity
//! and duplicate conditions; embedded: one writer command), so there are no locks to order and no deadlock.

use crate::Error;
use crate::error::quote;
use async_trait::async_trait;

/// Longest serial number, in bytes.
pub const MAX_SERIAL_BYTES: usize = 128;
/// Longest name, in characters.
pub const MAX_NAME_CHARS: usize = 256;

/// A port type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Port {
    /// A `P` port.
    P,
    /// An `R` port.
    R,
    /// A `Q` port.
    Q,
}

impl Port {
    /// Every port type, in the order associations are listed.
    pub const ALL: [Port; 3] = [Port::P, Port::R, Port::Q];

    /// A port type from its letter (`P`, `R` or `Q`).
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "P" => Some(Port::P),
            "R" => Some(Port::R),
            "Q" => Some(Port::Q),
            _ => None,
        }
    }

    /// The port type's letter.
    pub fn as_str(self) -> &'static str {
        match self {
            Port::P => "P",
            Port::R => "R",
            Port::Q => "Q",
        }
    }
}

/// A serial number: 1 to 128 bytes, no whitespace or control characters.
pub fn validate_serial(raw: &str, field: &str) -> Result<(), Error> {
    if raw.is_empty()
        || raw.len() > MAX_SERIAL_BYTES
        || raw.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(Error::invalid_field(
            field,
            format!(
                "`{field}` must be 1 to {MAX_SERIAL_BYTES} bytes without whitespace or control characters"
            ),
        ));
    }
    Ok(())
}

/// Validates a widget's name (`400 invalid_field` otherwise).
pub fn validate_name(name: &str) -> Result<(), Error> {
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(Error::invalid_field(
            "name",
            format!("`name` must be 1 to {MAX_NAME_CHARS} characters without control characters"),
        ));
    }
    Ok(())
}

/// The most port slots a widget has.
pub const MAX_PORTS: usize = 3;

/// 1 to [`MAX_PORTS`] slots, each exactly `P`, `R` or `Q`.
pub fn parse_ports(raw: &[String]) -> Result<Vec<Port>, Error> {
    if raw.is_empty() || raw.len() > MAX_PORTS {
        return Err(Error::invalid_field(
            "ports",
            format!("a widget has 1 to {MAX_PORTS} ports, not {}", raw.len()),
        ));
    }
    raw.iter()
        .map(|p| {
            Port::parse(p).ok_or_else(|| {
                Error::invalid_field(
                    "ports",
                    format!("a port is \"P\", \"R\" or \"Q\", not {}", quote(p)),
                )
            })
        })
        .collect()
}

/// A widget and its associations, in the order they were made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Widget {
    /// Its serial number, unique.
    pub serial: String,
    /// Its name.
    pub name: String,
    /// Its slots, one port type each (`[P, R, R]`).
    pub ports: Vec<Port>,
    /// `(port, peer)` pairs in the order they were made.
    pub associations: Vec<(Port, String)>,
}

impl Widget {
    /// Slots of type `port`.
    pub fn capacity(&self, port: Port) -> usize {
        self.ports.iter().filter(|p| **p == port).count()
    }

    /// Slots of type `port` taken by associations.
    pub fn used(&self, port: Port) -> usize {
        self.associations.iter().filter(|(p, _)| *p == port).count()
    }

    /// Slots of type `port` still free.
    pub fn free(&self, port: Port) -> usize {
        self.capacity(port).saturating_sub(self.used(port))
    }

    /// Whether it is associated with `peer` on `port`.
    pub fn is_associated(&self, port: Port, peer: &str) -> bool {
        self.associations
            .iter()
            .any(|(p, s)| *p == port && s == peer)
    }

    /// Why `self` cannot take an association with `peer` on `port`, if it cannot.
    pub fn refuse(&self, port: Port, peer: &str) -> Option<Error> {
        if self.is_associated(port, peer) {
            return Some(already_associated(&self.serial, peer, port));
        }
        if self.free(port) == 0 {
            return Some(no_free_slot(&self.serial, port));
        }
        None
    }
}

/// `404 widget_not_found`.
pub fn widget_not_found(serial: &str) -> Error {
    Error::not_found("widget_not_found", format!("no widget {}", quote(serial)))
        .with("serial_number", serial)
}

/// `409 duplicate_serial`: a widget with that serial number exists.
pub fn duplicate_serial(serial: &str) -> Error {
    Error::conflict(
        "duplicate_serial_number",
        format!("a widget {} exists already", quote(serial)),
    )
    .with("serial_number", serial)
}

/// `400 self_association`: a widget cannot associate with itself.
pub fn self_association() -> Error {
    Error::invalid("self_association", "a widget cannot associate with itself")
}

/// `409 no_free_slot`: the widget has no free slot of that port type.
pub fn no_free_slot(serial: &str, port: Port) -> Error {
    Error::conflict(
        "no_free_slot",
        format!(
            "widget {} has no free {} slot",
            quote(serial),
            port.as_str()
        ),
    )
    .with("serial_number", serial)
    .with("port", port.as_str())
}

/// `409 already_associated`: the two widgets are associated on that port already.
pub fn already_associated(serial: &str, peer: &str, port: Port) -> Error {
    Error::conflict(
        "already_associated",
        format!(
            "{} and {} are associated on {} already",
            quote(serial),
            quote(peer),
            port.as_str()
        ),
    )
}

/// `404 association_not_found`: the two widgets are not associated on that port.
pub fn association_not_found(serial: &str, peer: &str, port: Port) -> Error {
    Error::not_found(
        "association_not_found",
        format!(
            "{} and {} are not associated on {}",
            quote(serial),
            quote(peer),
            port.as_str()
        ),
    )
}

/// The widgets port.
#[async_trait]
pub trait Widgets: Send + Sync {
    /// Stores a new widget (`409 duplicate_serial` if its serial number is taken).
    async fn create(&self, widget: &Widget) -> Result<(), Error>;
    /// The widget, or `None` if there is none with that serial number.
    async fn get(&self, serial: &str) -> Result<Option<Widget>, Error>;
    /// Deletes the widget and releases every association on both sides, atomically.
    async fn delete(&self, serial: &str) -> Result<(), Error>;
    /// Claims one free `port` slot on both widgets, atomically, or nothing.
    async fn associate(&self, serial: &str, peer: &str, port: Port) -> Result<(), Error>;
    /// Releases one association on `port` between the two widgets, on both sides, atomically.
    async fn dissociate(&self, serial: &str, peer: &str, port: Port) -> Result<(), Error>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ports(raw: &[&str]) -> Result<Vec<Port>, Error> {
        parse_ports(&raw.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn ports_parse() {
        assert_eq!(
            ports(&["P", "R", "R"]).unwrap(),
            vec![Port::P, Port::R, Port::R]
        );
        for bad in [&[][..], &["p"], &["X"], &["P", "P", "P", "P"], &["PR"]] {
            assert_eq!(ports(bad).unwrap_err().extra["field"], "ports", "{bad:?}");
        }
    }

    #[test]
    fn slots_and_refusals() {
        let w = Widget {
            serial: "A".into(),
            name: "a".into(),
            ports: vec![Port::Q, Port::Q],
            associations: vec![(Port::Q, "B".into())],
        };
        assert_eq!(
            (
                w.capacity(Port::Q),
                w.used(Port::Q),
                w.free(Port::Q),
                w.free(Port::P)
            ),
            (2, 1, 1, 0)
        );
        assert_eq!(w.refuse(Port::Q, "B").unwrap().code, "already_associated");
        assert_eq!(w.refuse(Port::P, "C").unwrap().code, "no_free_slot");
        assert!(w.refuse(Port::Q, "C").is_none());
    }
}
