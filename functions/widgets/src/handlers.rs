//! The widget handlers: HTTP in, widgets port call, HTTP out.
//!
//! The bodies the handlers read and answer with are [`strata_api_types::widgets`]'s (what a handler
//! serializes is what the OpenAPI document's schema describes); first the function that builds the widget's
//! answer from the domain's type, then the handlers. Each operation's OpenAPI description is in
//! [`crate::openapi`].

use http::StatusCode;
use strata_api_types::widgets::{
    self as api, Association, AssociationCreate, FreeSlots, WidgetAssociation, WidgetCreate,
};
use strata_core::widgets::{
    Port, Widget, parse_ports, validate_name, validate_serial, widget_not_found,
};
use strata_core::{Error, Stores};
use strata_http::request::{body, path_param};
use strata_http::response::{empty, json};
use strata_http::{Request, Response};

/// The widget as the API shows it; associations in a stable order (port P, R, Q, then peer).
fn widget_body(w: &Widget) -> api::Widget {
    let mut associations = w.associations.clone();
    associations.sort();
    api::Widget {
        serial_number: w.serial.clone(),
        name: w.name.clone(),
        ports: w.ports.iter().map(|p| p.as_str().to_owned()).collect(),
        associations: associations
            .into_iter()
            .map(|(port, peer)| WidgetAssociation {
                port: port.as_str().to_owned(),
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
    Ok(json(StatusCode::CREATED, &widget_body(&widget)))
}

/// `GET /widgets/{serial}` → `200` the widget with its associations and free slots; `404 widget_not_found`.
pub async fn get(stores: &Stores, req: Request) -> Result<Response, Error> {
    let serial = serial_param(&req)?;
    let widget = stores
        .widgets
        .get(&serial)
        .await?
        .ok_or_else(|| widget_not_found(&serial))?;
    Ok(json(StatusCode::OK, &widget_body(&widget)))
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
            port: port.as_str().to_owned(),
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
