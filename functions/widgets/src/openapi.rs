//! The OpenAPI operations of the widget handlers ([`crate::handlers`]), one per route of `ROUTES`, and
//! their parameters; the body types and their schemas are [`strata_api_types::widgets`]'s.

use serde_json::json;
use strata_api_types::widgets::{
    Association, AssociationCreate, PortName, SerialString, Widget, WidgetCreate,
};
use strata_core::widgets::{MAX_NAME_CHARS, MAX_PORTS, MAX_SERIAL_BYTES};
use strata_http::openapi::{
    Header, Operation, OperationBuilder, Shared, headers, honours_idempotency_key, idempotency_key,
    json_body, link, ok, path_parameter, responses, schema_ref, unknown,
};
use utoipa::openapi::ResponseBuilder;

// The body types' schemas state the core's limits; their crate (which builds without the core) keeps
// copies, which must not drift (the port names: `tests::the_port_names_are_the_cores`).
const _: () = assert!(strata_api_types::widgets::MAX_SERIAL_BYTES == MAX_SERIAL_BYTES);
const _: () = assert!(strata_api_types::widgets::MAX_NAME_CHARS == MAX_NAME_CHARS);
const _: () = assert!(strata_api_types::widgets::MAX_PORTS == MAX_PORTS);

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

/// The OpenAPI operation of [`crate::handlers::create`].
pub fn create() -> Operation {
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
            ok::<Widget>("The widget.")
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

/// The OpenAPI operation of [`crate::handlers::get`].
pub fn get() -> Operation {
    let op = OperationBuilder::new()
        .tag("widgets")
        .summary(Some("Read a widget"))
        .description(Some("With its associations (ordered by port P, R, Q, then peer) and free slots per port type."))
        .parameter(serial_parameter());
    responses(
        op,
        [
            ("200", ok::<Widget>("The widget.").build().into()),
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

/// The OpenAPI operation of [`crate::handlers::delete`].
pub fn delete() -> Operation {
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

/// The OpenAPI operation of [`crate::handlers::associate`].
pub fn associate() -> Operation {
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

/// The OpenAPI operation of [`crate::handlers::dissociate`].
pub fn dissociate() -> Operation {
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

#[cfg(test)]
mod tests {
    use strata_core::widgets::Port;

    #[test]
    fn the_port_names_are_the_cores() {
        assert_eq!(
            strata_api_types::widgets::PORTS,
            Port::ALL.map(Port::as_str)
        );
    }
}
