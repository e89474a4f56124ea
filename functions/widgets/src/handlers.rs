//! The widget handlers: HTTP in, widgets port call, HTTP out.
//!
//! Next to each handler: the types of the bodies it answers with (what it serializes is what the OpenAPI
//! document's schema describes) and reads, and its `*_openapi` function, the operation of the document that
//! its route in `ROUTES` carries.

use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;
use strata_core::widgets::{
    MAX_NAME_CHARS, MAX_PORTS, MAX_SERIAL_BYTES, Port, Widget, parse_ports, validate_name,
    validate_serial, widget_not_found,
};
use strata_core::{Error, Stores};
use strata_http::openapi::{
    Header, NO_SPACE_OR_CONTROL, Operation, OperationBuilder, Shared, headers,
    honours_idempotency_key, idempotency_key, integer, json_body, link, ok, path_parameter,
    responses, schema_ref, string, unknown,
};
use strata_http::request::{body, path_param};
use strata_http::response::{empty, json};
use strata_http::{Request, Response};
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder};
use utoipa::openapi::{RefOr, ResponseBuilder, Schema};
use utoipa::{PartialSchema, ToSchema};

/// The schema of a port type: what [`Port::parse`] accepts.
pub struct PortName;

impl PartialSchema for PortName {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::SchemaType::AnyValue)
            .description(Some("A port type."))
            .enum_values(Some(Port::ALL.map(Port::as_str)))
            .into()
    }
}

impl ToSchema for PortName {
    fn name() -> std::borrow::Cow<'static, str> {
        "Port".into()
    }
}

/// The schema of a serial number: what [`validate_serial`] accepts.
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

/// A widget's name: what [`validate_name`] accepts.
fn widget_name() -> utoipa::openapi::Object {
    strata_http::openapi::name(MAX_NAME_CHARS)
}

/// A widget's ports: 1 to [`MAX_PORTS`].
fn ports() -> utoipa::openapi::schema::Array {
    ArrayBuilder::new()
        .items(schema_ref::<PortName>())
        .min_items(Some(1))
        .max_items(Some(MAX_PORTS))
        .build()
}

/// The body of `POST /widgets`.
#[derive(Deserialize, ToSchema)]
pub struct WidgetCreate {
    #[schema(value_type = SerialString)]
    pub serial_number: String,
    #[schema(schema_with = widget_name)]
    pub name: String,
    #[schema(schema_with = ports)]
    pub ports: Vec<String>,
}

/// One association: the port type and the other widget.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WidgetAssociation {
    #[schema(value_type = PortName)]
    pub port: &'static str,
    #[schema(value_type = SerialString)]
    pub peer: String,
}

/// At most one association per slot.
fn associations() -> utoipa::openapi::schema::Array {
    ArrayBuilder::new()
        .max_items(Some(MAX_PORTS))
        .items(WidgetAssociation::schema())
        .build()
}

/// Free slots of a port type: `0..=MAX_PORTS`.
fn slots() -> utoipa::openapi::Object {
    integer(0, Some(MAX_PORTS as u64))
}

/// The free slots per port type.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FreeSlots {
    #[serde(rename = "P")]
    #[schema(schema_with = slots)]
    pub p: usize,
    #[serde(rename = "R")]
    #[schema(schema_with = slots)]
    pub r: usize,
    #[serde(rename = "Q")]
    #[schema(schema_with = slots)]
    pub q: usize,
}

/// The widget as the API shows it; associations in a stable order (port P, R, Q, then peer).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Widget)]
pub struct WidgetBody {
    #[schema(value_type = SerialString)]
    pub serial_number: String,
    #[schema(schema_with = widget_name)]
    pub name: String,
    #[schema(schema_with = ports)]
    pub ports: Vec<&'static str>,
    #[schema(schema_with = associations)]
    pub associations: Vec<WidgetAssociation>,
    #[schema(inline)]
    pub free: FreeSlots,
}

impl From<&Widget> for WidgetBody {
    fn from(w: &Widget) -> Self {
        let mut associations = w.associations.clone();
        associations.sort();
        Self {
            serial_number: w.serial.clone(),
            name: w.name.clone(),
            ports: w.ports.iter().map(|p| p.as_str()).collect(),
            associations: associations
                .into_iter()
                .map(|(port, peer)| WidgetAssociation {
                    port: port.as_str(),
                    peer,
                })
                .collect(),
            free: FreeSlots {
                p: w.free(Port::P),
                r: w.free(Port::R),
                q: w.free(Port::Q),
            },
        }
    }
}

/// The body of `POST /widgets/{serial}/associations`.
#[derive(Deserialize, ToSchema)]
pub struct AssociationCreate {
    #[schema(value_type = SerialString)]
    pub peer: String,
    #[schema(value_type = PortName)]
    pub port: String,
}

/// A new association.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Association {
    #[schema(value_type = SerialString)]
    pub serial_number: String,
    #[schema(value_type = SerialString)]
    pub peer: String,
    #[schema(value_type = PortName)]
    pub port: &'static str,
}

fn serial_parameter() -> utoipa::openapi::path::Parameter {
    path_parameter(
        "serial",
        "The widget's serial number, percent-encoded.",
        schema_ref::<SerialString>(),
        json!("W-1"),
    )
}

fn port_parameter() -> utoipa::openapi::path::Parameter {
    path_parameter(
        "port",
        "The port type of the association.",
        schema_ref::<PortName>(),
        json!("R"),
    )
}

fn peer_parameter() -> utoipa::openapi::path::Parameter {
    path_parameter(
        "peer",
        "The other widget's serial number, percent-encoded.",
        schema_ref::<SerialString>(),
        json!("W-2"),
    )
}

fn port_field(raw: &str) -> Result<Port, Error> {
    Port::parse(raw).ok_or_else(|| {
        Error::invalid_field(
            "port",
            format!(
                "`port` is \"P\", \"R\" or \"Q\", not {}",
                strata_core::error::quote(raw)
            ),
        )
    })
}

fn serial_param(req: &Request) -> Result<String, Error> {
    let serial = path_param(req, "serial")?;
    validate_serial(&serial, "serial_number")?;
    Ok(serial)
}

/// `POST /widgets` with `{"serial_number","name","ports"}` → `201` the widget; `409 duplicate_serial_number`.
pub async fn create(stores: &Stores, req: Request) -> Result<Response, Error> {
    let WidgetCreate {
        serial_number,
        name,
        ports,
    } = body(&req)?;
    validate_serial(&serial_number, "serial_number")?;
    validate_name(&name)?;
    let widget = Widget {
        serial: serial_number,
        name,
        ports: parse_ports(&ports)?,
        associations: Vec::new(),
    };
    stores.widgets.create(&widget).await?;
    Ok(json(StatusCode::CREATED, &WidgetBody::from(&widget)))
}

/// `GET /widgets/{serial}` → `200` the widget with its associations and free slots; `404 widget_not_found`.
pub async fn get(stores: &Stores, req: Request) -> Result<Response, Error> {
    let serial = serial_param(&req)?;
    let widget = stores
        .widgets
        .get(&serial)
        .await?
        .ok_or_else(|| widget_not_found(&serial))?;
    Ok(json(StatusCode::OK, &WidgetBody::from(&widget)))
}

/// `DELETE /widgets/{serial}` → `204`; every association is released on both sides; `404 widget_not_found`.
pub async fn delete(stores: &Stores, req: Request) -> Result<Response, Error> {
    let serial = serial_param(&req)?;
    stores.widgets.delete(&serial).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

/// `POST /widgets/{serial}/associations` with `{"peer","port"}` → `201 {"serial_number","peer","port"}`.
pub async fn associate(stores: &Stores, req: Request) -> Result<Response, Error> {
    let serial = serial_param(&req)?;
    let AssociationCreate { peer, port } = body(&req)?;
    validate_serial(&peer, "peer")?;
    let port = port_field(&port)?;
    stores.widgets.associate(&serial, &peer, port).await?;
    Ok(json(
        StatusCode::CREATED,
        &Association {
            serial_number: serial,
            peer,
            port: port.as_str(),
        },
    ))
}

/// `DELETE /widgets/{serial}/associations/{port}/{peer}` → `204`; `404 association_not_found`.
pub async fn dissociate(stores: &Stores, req: Request) -> Result<Response, Error> {
    let serial = serial_param(&req)?;
    let port = port_field(&path_param(&req, "port")?)?;
    let peer = path_param(&req, "peer")?;
    validate_serial(&peer, "peer")?;
    stores.widgets.dissociate(&serial, &peer, port).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

/// The OpenAPI operation of [`create`].
pub fn create_openapi() -> Operation {
    let outcome = unknown("the widget may have been created");
    let op = OperationBuilder::new()
        .tag("widgets")
        .summary(Some("Create a widget"))
        .description(Some(honours_idempotency_key(
            "With 1 to 3 port slots, each `P`, `R` or `Q`.",
        )))
        .parameter(idempotency_key())
        .request_body(Some(
            json_body::<WidgetCreate>(
                true,
                json!({"serial_number": "W-1", "name": "Sprocket", "ports": ["P", "R", "R"]}),
            )
            .build(),
        ));
    responses(op, [
        (
            "201",
            ok::<WidgetBody>("The widget.")
                .link("ReadWidget", link("widgets-get", "Read the widget back.", &[("serial", "$response.body#/serial_number")]))
                .link("DeleteWidget", link("widgets-delete", "Delete the widget.", &[("serial", "$response.body#/serial_number")]))
                .link("Associate", link("widgets-associate", "Associate the widget with another.", &[("serial", "$response.body#/serial_number")]))
                .extensions(headers(&[Header::IdempotentReplayed], &[]))
                .build()
                .into(),
        ),
        Shared::BadRequest.with("`invalid_json`, `invalid_field` (`serial_number`, `name` or `ports`: another letter, lower case, more than 3, none, not an array of strings) or `invalid_idempotency_key`."),
        Shared::Unauthorized.plain(),
        Shared::RequestTimeout.plain(),
        Shared::Conflict.with("`duplicate_serial_number` (with `serial_number`) or `request_in_progress`."),
        Shared::PayloadTooLarge.with("`body_too_large`."),
        Shared::IdempotencyKeyReused.with("`idempotency_key_reused`."),
        Shared::TooManyRequests.outcome(&outcome),
        Shared::InternalError.plain(),
        Shared::StoreUnavailable.outcome(&outcome),
    ])
    .build()
}

/// The OpenAPI operation of [`get`].
pub fn get_openapi() -> Operation {
    let op = OperationBuilder::new()
        .tag("widgets")
        .summary(Some("Read a widget"))
        .description(Some("With its associations (ordered by port P, R, Q, then peer) and free slots per port type."))
        .parameter(serial_parameter());
    responses(
        op,
        [
            ("200", ok::<WidgetBody>("The widget.").build().into()),
            Shared::BadRequest.with("`invalid_field` (`serial_number`) or `invalid_path`."),
            Shared::Unauthorized.plain(),
            Shared::NotFound.with("`widget_not_found`."),
            Shared::TooManyRequests.plain(),
            Shared::InternalError.plain(),
            Shared::StoreUnavailable.plain(),
        ],
    )
    .build()
}

/// The OpenAPI operation of [`delete`].
pub fn delete_openapi() -> Operation {
    let outcome = unknown("the widget may have been deleted");
    let op = OperationBuilder::new()
        .tag("widgets")
        .summary(Some("Delete a widget"))
        .description(Some("Every association is released on both sides."))
        .parameter(serial_parameter());
    responses(
        op,
        [
            (
                "204",
                ResponseBuilder::new()
                    .description("Deleted.")
                    .build()
                    .into(),
            ),
            Shared::BadRequest.with("`invalid_field` (`serial_number`) or `invalid_path`."),
            Shared::Unauthorized.plain(),
            Shared::NotFound.with("`widget_not_found`."),
            Shared::TooManyRequests.outcome(&outcome),
            Shared::InternalError.plain(),
            Shared::StoreUnavailable.outcome(&outcome),
        ],
    )
    .build()
}

/// The OpenAPI operation of [`associate`].
pub fn associate_openapi() -> Operation {
    let outcome = unknown("the association may have been made");
    let op = OperationBuilder::new()
        .tag("widgets")
        .summary(Some("Associate two widgets on a port type"))
        .description(Some(honours_idempotency_key("Takes one free slot of that type on both widgets; visible from both sides. Two widgets may be associated more than once, never twice on the same port type.")))
        .parameter(serial_parameter())
        .parameter(idempotency_key())
        .request_body(Some(
            json_body::<AssociationCreate>(true, json!({"peer": "W-2", "port": "R"}))
                .build(),
        ));
    responses(op, [
        (
            "201",
            ok::<Association>("The association.")
                .link("Dissociate", link("widgets-dissociate", "Remove the association.", &[("serial", "$response.body#/serial_number"), ("port", "$response.body#/port"), ("peer", "$response.body#/peer")]))
                .link("ReadWidget", link("widgets-get", "Read the widget with its association.", &[("serial", "$response.body#/serial_number")]))
                .link("ReadPeer", link("widgets-get", "Read the peer with its association.", &[("serial", "$response.body#/peer")]))
                .extensions(headers(&[Header::IdempotentReplayed], &[]))
                .build()
                .into(),
        ),
        Shared::BadRequest.with("`self_association`, `invalid_json`, `invalid_field` (`serial_number`, `peer`, `port`), `invalid_path` or `invalid_idempotency_key`."),
        Shared::Unauthorized.plain(),
        Shared::NotFound.with("`widget_not_found` (either side, with `serial_number`)."),
        Shared::RequestTimeout.plain(),
        Shared::Conflict.with("`no_free_slot` (either side; names it in `serial_number`, with `port`), `already_associated` or `request_in_progress`."),
        Shared::PayloadTooLarge.with("`body_too_large`."),
        Shared::IdempotencyKeyReused.with("`idempotency_key_reused`."),
        Shared::TooManyRequests.outcome(&outcome),
        Shared::InternalError.plain(),
        Shared::StoreUnavailable.outcome(&outcome),
    ])
    .build()
}

/// The OpenAPI operation of [`dissociate`].
pub fn dissociate_openapi() -> Operation {
    let outcome = unknown("the association may have been removed");
    let op = OperationBuilder::new()
        .tag("widgets")
        .summary(Some("Remove an association"))
        .description(Some("Frees the slot on both widgets."))
        .parameter(serial_parameter())
        .parameter(port_parameter())
        .parameter(peer_parameter());
    responses(
        op,
        [
            (
                "204",
                ResponseBuilder::new()
                    .description("Removed.")
                    .build()
                    .into(),
            ),
            Shared::BadRequest
                .with("`invalid_field` (`serial_number`, `port`, `peer`) or `invalid_path`."),
            Shared::Unauthorized.plain(),
            Shared::NotFound.with("`association_not_found`."),
            Shared::TooManyRequests.outcome(&outcome),
            Shared::InternalError.plain(),
            Shared::StoreUnavailable.outcome(&outcome),
        ],
    )
    .build()
}
