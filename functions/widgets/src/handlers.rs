//! The widget handlers: HTTP in, widgets port call, HTTP out.
//!
//! First the types of the bodies the handlers read and answer with (what a handler serializes is what the
//! OpenAPI document's schema describes), then the handlers. Each operation's OpenAPI description, and the
//! schema helpers the body types name, are in [`crate::openapi`].

use crate::openapi;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use strata_core::widgets::{
    Port, Widget, parse_ports, validate_name, validate_serial, widget_not_found,
};
use strata_core::{Error, Stores};
use strata_http::request::{body, path_param};
use strata_http::response::{empty, json};
use strata_http::{Request, Response};
use utoipa::ToSchema;

/// The body of `POST /widgets`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct WidgetCreate {
    #[schema(value_type = openapi::SerialString)]
    pub serial_number: String,
    #[schema(schema_with = openapi::widget_name)]
    pub name: String,
    #[schema(schema_with = openapi::ports)]
    pub ports: Vec<String>,
}

/// One association: the port type and the other widget.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WidgetAssociation {
    #[schema(value_type = openapi::PortName)]
    pub port: &'static str,
    #[schema(value_type = openapi::SerialString)]
    pub peer: String,
}

/// The free slots per port type.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FreeSlots {
    #[serde(rename = "P")]
    #[schema(schema_with = openapi::slots)]
    pub p: usize,
    #[serde(rename = "R")]
    #[schema(schema_with = openapi::slots)]
    pub r: usize,
    #[serde(rename = "Q")]
    #[schema(schema_with = openapi::slots)]
    pub q: usize,
}

/// The widget as the API shows it; associations in a stable order (port P, R, Q, then peer).
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Widget)]
pub struct WidgetBody {
    #[schema(value_type = openapi::SerialString)]
    pub serial_number: String,
    #[schema(schema_with = openapi::widget_name)]
    pub name: String,
    #[schema(schema_with = openapi::ports)]
    pub ports: Vec<&'static str>,
    #[schema(schema_with = openapi::associations)]
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
#[derive(Debug, Deserialize, ToSchema)]
pub struct AssociationCreate {
    #[schema(value_type = openapi::SerialString)]
    pub peer: String,
    #[schema(value_type = openapi::PortName)]
    pub port: String,
}

/// A new association.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Association {
    #[schema(value_type = openapi::SerialString)]
    pub serial_number: String,
    #[schema(value_type = openapi::SerialString)]
    pub peer: String,
    #[schema(value_type = openapi::PortName)]
    pub port: &'static str,
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
