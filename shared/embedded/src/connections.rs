//! WebSocket sessions on the local server: in memory, like the connections themselves.

use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::Mutex;
use strata_core::Error;
use strata_core::kv::line::Connections;
use strata_core::kv::tx::TxId;

#[derive(Debug, Default)]
pub struct MemoryConnections {
    // A std Mutex, not a tokio one: nothing awaits while it is held.
    open: Mutex<HashMap<String, TxId>>,
}

#[async_trait]
impl Connections for MemoryConnections {
    async fn transaction(&self, connection: &str) -> Result<Option<TxId>, Error> {
        Ok(self
            .open
            .lock()
            .expect("no panics while holding the lock")
            .get(connection)
            .cloned())
    }

    async fn set_transaction(&self, connection: &str, tx: Option<&TxId>) -> Result<(), Error> {
        let mut open = self.open.lock().expect("no panics while holding the lock");
        match tx {
            Some(tx) => open.insert(connection.to_owned(), tx.clone()),
            None => open.remove(connection),
        };
        Ok(())
    }

    async fn replace_transaction(
        &self,
        connection: &str,
        expected: Option<&TxId>,
        new: Option<&TxId>,
    ) -> Result<bool, Error> {
        let mut open = self.open.lock().expect("no panics while holding the lock");
        if open.get(connection) != expected {
            return Ok(false);
        }
        match new {
            Some(tx) => open.insert(connection.to_owned(), tx.clone()),
            None => open.remove(connection),
        };
        Ok(true)
    }

    async fn forget(&self, connection: &str) -> Result<Option<TxId>, Error> {
        Ok(self
            .open
            .lock()
            .expect("no panics while holding the lock")
            .remove(connection))
    }
}
