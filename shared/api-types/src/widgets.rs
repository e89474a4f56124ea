//! The widget bodies (CONTRACT.md §3): `/widgets`.

use crate::schema::{NO_SPACE_OR_CONTROL, integer, string};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use utoipa::openapi::schema::{ObjectBuilder, SchemaType};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

/// The longest serial number in bytes (`strata_core::widgets::MAX_SERIAL_BYTES`, which the service checks
/// is the same).
pub const MAX_SERIAL_BYTES: usize = 128;
/// The longest widget name in characters (`strata_core::widgets::MAX_NAME_CHARS`, likewise).
pub const MAX_NAME_CHARS: usize = 256;
/// The most port slots a widget has (`strata_core::widgets::MAX_PORTS`, likewise).
pub const MAX_PORTS: usize = 3;
// The `min_items`/`max_items` of `ports` and `associations` are literals (utoipa's attributes take no
// constants).
const _: () = assert!(MAX_PORTS == 3);
/// The port types, in their order (`strata_core::widgets::Port::ALL`, likewise).
pub const PORTS: [&str; 3] = ["P", "R", "Q"];

/// The schema of a port type: what `strata_core::widgets::Port::parse` accepts.
#[derive(Debug)]
pub struct PortName;

impl PartialSchema for PortName {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(SchemaType::AnyValue)
            .description(Some("A port type."))
            .enum_values(Some(PORTS))
            .into()
    }
}

impl ToSchema for PortName {
    fn name() -> Cow<'static, str> {
        "Port".into()
    }
}

/// The schema of a serial number: what `strata_core::widgets::validate_serial` accepts.
#[derive(Debug)]
pub struct SerialString;

impl PartialSchema for SerialString {
    fn schema() -> RefOr<Schema> {
        string(
            Some("1 to 128 bytes, no whitespace or control characters."),
            Some(1),
            Some(MAX_SERIAL_BYTES),
            Some(NO_SPACE_OR_CONTROL),
        )
        .into()
    }
}

impl ToSchema for SerialString {}

/// A widget's name: what `strata_core::widgets::validate_name` accepts.
fn widget_name() -> utoipa::openapi::Object {
    crate::schema::name(MAX_NAME_CHARS)
}

/// Free slots of a port type: `0..=MAX_PORTS`.
fn slots() -> utoipa::openapi::Object {
    integer(0, Some(MAX_PORTS as u64))
}

/// The body of `POST /widgets`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[allow(
    missing_docs,
    reason = "a field's doc comment would become part of its schema"
)]
pub struct WidgetCreate {
    #[schema(value_type = SerialString)]
    pub serial_number: String,
    /// 1 to 256 characters, no control characters.
    #[schema(schema_with = widget_name)]
    pub name: String,
    #[schema(value_type = Vec<PortName>, min_items = 1, max_items = 3)]
    pub ports: Vec<String>,
}

/// One association: the port type and the other widget.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[allow(
    missing_docs,
    reason = "a field's doc comment would become part of its schema"
)]
pub struct WidgetAssociation {
    #[schema(value_type = PortName)]
    pub port: String,
    #[schema(value_type = SerialString)]
    pub peer: String,
}

/// The free slots per port type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FreeSlots {
    /// Free `P` slots.
    #[serde(rename = "P")]
    #[schema(schema_with = slots)]
    pub p: usize,
    /// Free `R` slots.
    #[serde(rename = "R")]
    #[schema(schema_with = slots)]
    pub r: usize,
    /// Free `Q` slots.
    #[serde(rename = "Q")]
    #[schema(schema_with = slots)]
    pub q: usize,
}

impl FreeSlots {
    /// The free slots of a port type, by its name (`P`, `R` or `Q`).
    pub fn get(&self, port: &str) -> Option<usize> {
        match port {
            "P" => Some(self.p),
            "R" => Some(self.r),
            "Q" => Some(self.q),
            _ => None,
        }
    }
}

/// The widget as the API shows it; associations in a stable order (port P, R, Q, then peer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[allow(
    missing_docs,
    reason = "a field's doc comment would become part of its schema"
)]
pub struct Widget {
    #[schema(value_type = SerialString)]
    pub serial_number: String,
    /// The widget's name.
    #[schema(schema_with = widget_name)]
    pub name: String,
    #[schema(value_type = Vec<PortName>, min_items = 1, max_items = 3)]
    pub ports: Vec<String>,
    #[schema(inline, max_items = 3)]
    pub associations: Vec<WidgetAssociation>,
    #[schema(inline)]
    pub free: FreeSlots,
}

/// The body of `POST /widgets/{serial}/associations`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[allow(
    missing_docs,
    reason = "a field's doc comment would become part of its schema"
)]
pub struct AssociationCreate {
    #[schema(value_type = SerialString)]
    pub peer: String,
    #[schema(value_type = PortName)]
    pub port: String,
}

/// A new association.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[allow(
    missing_docs,
    reason = "a field's doc comment would become part of its schema"
)]
pub struct Association {
    #[schema(value_type = SerialString)]
    pub serial_number: String,
    #[schema(value_type = SerialString)]
    pub peer: String,
    #[schema(value_type = PortName)]
    pub port: String,
}
