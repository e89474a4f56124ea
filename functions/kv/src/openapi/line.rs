//! The OpenAPI operation of `POST /kv/commands` ([`crate::line::commands`]): the line protocol over HTTP.

use serde_json::json;
use strata_core::kv::line::{MAX_COMMANDS_PER_REQUEST, MAX_REPLY_BYTES};
use strata_http::openapi::{Operation, OperationBuilder, Shared, responses};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{ContentBuilder, Required, ResponseBuilder};

/// The OpenAPI operation of [`crate::line::commands`].
pub fn commands() -> Operation {
    let op = OperationBuilder::new()
        .tag("kv")
        .summary(Some("Run line-protocol commands"))
        .description(Some("The line protocol over HTTP: one command per line (`PUT key value...`, `GET key`, `DEL key`, `START`, `COMMIT`, `ROLLBACK`), run in one session; a transaction still open at the end of the body is rolled back. Each command gets one reply line of JSON (blank lines get none); failures of single commands are `{\"status\": \"Error\", \"mesg\": ...}` lines, not HTTP errors."))
        .request_body(Some(
            RequestBodyBuilder::new()
                .description(Some(
                    "Commands, one per line (`\\n` or `\\r\\n`); an empty body runs none.",
                ))
                .required(Some(Required::False))
                .content(
                    "text/plain",
                    ContentBuilder::new()
                        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                        .example(Some(json!("PUT greeting hello world\nGET greeting\n")))
                        .build(),
                )
                .build(),
        ));
    // One JSON object a line, each with the status of its command.
    let replies = ResponseBuilder::new()
        .description("One reply line per command, each ending in a newline.")
        .content(
            "text/plain",
            ContentBuilder::new()
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .pattern(Some("^(\\{\"status\": \"(Ok|Error)\"[^\\n]*\\}\\n)*$")),
                ))
                .build(),
        )
        .build();
    responses(op, [
        ("200", replies.into()),
        Shared::BadRequest.with("`invalid_body`: the body is not UTF-8."),
        Shared::Unauthorized.plain(),
        Shared::RequestTimeout.plain(),
        Shared::PayloadTooLarge.with(&format!("`body_too_large`; `too_many_commands`: over {MAX_COMMANDS_PER_REQUEST} commands (non-blank lines), nothing ran (`commands`, `limit`); `reply_too_large`: the replies would pass {MAX_REPLY_BYTES} bytes, so the request stopped before the command that would pass them: the first `commands_run` commands ran (their single-key writes stand, a transaction they left open was rolled back), the rest did not (`commands_run`, `commands`, `limit`).")),
        Shared::TooManyRequests.plain(),
    ])
    .build()
}
