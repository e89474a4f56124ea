//! The exhaustion suite: each attack on the bounds of the contract ("every request, connection and stored
//! record is bounded") tried from outside against a real `strata serve`, asserting that well-behaved
//! clients keep being answered, that every refusal is the documented error, that nothing acknowledged is
//! lost, and that the server's peak resident memory stays under a stated bound. Long variants with a
//! report: `infra/scripts/exhaust`.
mod http;
