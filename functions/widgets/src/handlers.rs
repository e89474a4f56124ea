//! The widget handlers: HTTP in, widgets port call, HTTP out.

use http::StatusCode;
use serde_json::{Value, json};
use strata_core::widgets::{
    Port, Widget, parse_ports, validate_name, validate_serial, widget_not_found,
};
use strata_core::{Error, Stores};
use strata_http::request::{json_object, path_param};
use strata_http::response::{empty, from_result, json};
use strata_http::{Request, Response, idempotency};

/// The widget as the API shows it; associations in a stable order (port P, R, Q, then peer).
fn widget_json(w: &Widget) -> Value {
    let mut associations = w.associations.clone();
    associations.sort();
    json!({
        "serial_number": w.serial,
        "name": w.name,
        "ports": w.ports.iter().map(|p| p.as_str()).collect::<Vec<_>>(),
        "associations": associations.iter().map(|(port, peer)| json!({"port": port.as_str(), "peer": peer})).collect::<Vec<_>>(),
        "free": {"P": w.free(Port::P), "R": w.free(Port::R), "Q": w.free(Port::Q)},
    })
}

fn port_field(raw: &str) -> Result<Port, Error> {
    Port::parse(raw).ok_or_else(|| {
        Error::invalid_field(
            "port",
            format!("`port` is \"P\", \"R\" or \"Q\", not {raw:?}"),
        )
    })
}

fn serial_param(req: &Request) -> Result<String, Error> {
    let serial = path_param(req, "serial")?;
    validate_serial(&serial, "serial_number")?;
    Ok(serial)
}

/// `POST /widgets` with `{"serial_number","name","ports"}` → `201` the widget; `409 duplicate_serial_number`.
pub async fn create(stores: &Stores, req: Request) -> Response {
    idempotency::run(stores, req, "widgets-create", |req, _| async move {
        from_result(
            async {
                let body = json_object(&req)?;
                let serial = body.string("serial_number")?;
                validate_serial(&serial, "serial_number")?;
                let name = body.string("name")?;
                validate_name(&name)?;
                let ports = match body.0.get("ports") {
                    Some(Value::Array(items)) => items
                        .iter()
                        .map(|v| v.as_str().map(str::to_owned))
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(|| {
                            Error::invalid_field("ports", "`ports` must be an array of strings")
                        })?,
                    Some(_) => {
                        return Err(Error::invalid_field(
                            "ports",
                            "`ports` must be an array of strings",
                        ));
                    }
                    None => return Err(Error::invalid_field("ports", "`ports` is required")),
                };
                let widget = Widget {
                    serial,
                    name,
                    ports: parse_ports(&ports)?,
                    associations: Vec::new(),
                };
                stores.widgets.create(&widget).await?;
                Ok(json(StatusCode::CREATED, &widget_json(&widget)))
            }
            .await,
        )
    })
    .await
}

/// `GET /widgets/{serial}` → `200` the widget with its associations and free slots; `404 widget_not_found`.
pub async fn get(stores: &Stores, req: Request) -> Response {
    from_result(
        async {
            let serial = serial_param(&req)?;
            let widget = stores
                .widgets
                .get(&serial)
                .await?
                .ok_or_else(|| widget_not_found(&serial))?;
            Ok(json(StatusCode::OK, &widget_json(&widget)))
        }
        .await,
    )
}

/// `DELETE /widgets/{serial}` → `204`; every association is released on both sides; `404 widget_not_found`.
pub async fn delete(stores: &Stores, req: Request) -> Response {
    from_result(
        async {
            let serial = serial_param(&req)?;
            stores.widgets.delete(&serial).await?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        .await,
    )
}

/// `POST /widgets/{serial}/associations` with `{"peer","port"}` → `201 {"serial_number","peer","port"}`.
pub async fn associate(stores: &Stores, req: Request) -> Response {
    idempotency::run(stores, req, "widgets-associate", |req, _| async move {
        from_result(
            async {
                let serial = serial_param(&req)?;
                let body = json_object(&req)?;
                let peer = body.string("peer")?;
                validate_serial(&peer, "peer")?;
                let port = port_field(&body.string("port")?)?;
                stores.widgets.associate(&serial, &peer, port).await?;
                Ok(json(
                    StatusCode::CREATED,
                    &json!({"serial_number": serial, "peer": peer, "port": port.as_str()}),
                ))
            }
            .await,
        )
    })
    .await
}

/// `DELETE /widgets/{serial}/associations/{port}/{peer}` → `204`; `404 association_not_found`.
pub async fn dissociate(stores: &Stores, req: Request) -> Response {
    from_result(
        async {
            let serial = serial_param(&req)?;
            let port = port_field(&path_param(&req, "port")?)?;
            let peer = path_param(&req, "peer")?;
            validate_serial(&peer, "peer")?;
            stores.widgets.dissociate(&serial, &peer, port).await?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        .await,
    )
}
