//! Widgets on the embedded store (keyspace `widgets`: serial → name, ports, associations). Every change is one
//! writer command that reads and rewrites both widgets it touches, so a claim is atomic on both sides and
//! concurrent opposite requests simply run one after the other: no locks, no deadlock.

use crate::{Space, Store};
use async_trait::async_trait;
use strata_core::Error;
use strata_core::widgets::{
    Port, Widget, Widgets, association_not_found, duplicate_serial, self_association,
    widget_not_found,
};

#[derive(Debug)]
pub struct EmbeddedWidgets {
    store: Store,
}

impl EmbeddedWidgets {
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

fn corrupt() -> Error {
    Error::internal("corrupt widget record")
}

fn port_byte(port: Port) -> u8 {
    port.as_str().as_bytes()[0]
}

fn port_of(byte: u8) -> Result<Port, Error> {
    Port::parse(std::str::from_utf8(&[byte]).map_err(|_| corrupt())?).ok_or_else(corrupt)
}

/// `format version | name length (u16) | name | port count | ports | association count (u32) | (port, peer length, peer)*`
pub(crate) fn encode(w: &Widget) -> Vec<u8> {
    let mut out = crate::format::versioned(16 + w.name.len() + w.associations.len() * 16);
    out.extend_from_slice(&(w.name.len() as u16).to_be_bytes());
    out.extend_from_slice(w.name.as_bytes());
    out.push(w.ports.len() as u8);
    out.extend(w.ports.iter().map(|p| port_byte(*p)));
    out.extend_from_slice(&(w.associations.len() as u32).to_be_bytes());
    for (port, peer) in &w.associations {
        out.push(port_byte(*port));
        out.push(peer.len() as u8);
        out.extend_from_slice(peer.as_bytes());
    }
    out
}

pub(crate) fn decode(serial: &str, bytes: &[u8]) -> Result<Widget, Error> {
    let bytes = crate::format::payload("widget record", bytes)?;
    let mut at = 0;
    let mut take = |n: usize| -> Result<&[u8], Error> {
        let slice = bytes.get(at..at + n).ok_or_else(corrupt)?;
        at += n;
        Ok(slice)
    };
    let name_len = u16::from_be_bytes(take(2)?.try_into().map_err(|_| corrupt())?) as usize;
    let name = String::from_utf8(take(name_len)?.to_vec()).map_err(|_| corrupt())?;
    let port_count = take(1)?[0] as usize;
    let ports = take(port_count)?
        .iter()
        .map(|b| port_of(*b))
        .collect::<Result<_, _>>()?;
    let count = u32::from_be_bytes(take(4)?.try_into().map_err(|_| corrupt())?) as usize;
    let mut associations = Vec::with_capacity(count);
    for _ in 0..count {
        let port = port_of(take(1)?[0])?;
        let len = take(1)?[0] as usize;
        associations.push((
            port,
            String::from_utf8(take(len)?.to_vec()).map_err(|_| corrupt())?,
        ));
    }
    Ok(Widget {
        serial: serial.to_owned(),
        name,
        ports,
        associations,
    })
}

fn load(staging: &crate::writer::Staging<'_>, serial: &str) -> Result<Option<Widget>, Error> {
    staging
        .get(Space::Widgets, serial.as_bytes())?
        .map(|bytes| decode(serial, &bytes))
        .transpose()
}

fn save(staging: &mut crate::writer::Staging<'_>, widget: &Widget) {
    staging.put(
        Space::Widgets,
        widget.serial.as_bytes().to_vec(),
        encode(widget),
    );
}

#[async_trait]
impl Widgets for EmbeddedWidgets {
    async fn create(&self, widget: &Widget) -> Result<(), Error> {
        let widget = widget.clone();
        self.store
            .write(move |staging| {
                if staging
                    .get(Space::Widgets, widget.serial.as_bytes())?
                    .is_some()
                {
                    return Err(duplicate_serial(&widget.serial));
                }
                save(staging, &widget);
                Ok(())
            })
            .await
    }

    async fn get(&self, serial: &str) -> Result<Option<Widget>, Error> {
        self.store
            .read(Space::Widgets, serial.as_bytes())?
            .map(|bytes| decode(serial, &bytes))
            .transpose()
    }

    async fn delete(&self, serial: &str) -> Result<(), Error> {
        let serial = serial.to_owned();
        self.store
            .write(move |staging| {
                let widget = load(staging, &serial)?.ok_or_else(|| widget_not_found(&serial))?;
                for (port, peer) in &widget.associations {
                    if let Some(mut other) = load(staging, peer)? {
                        if let Some(i) = other
                            .associations
                            .iter()
                            .position(|(p, s)| p == port && *s == serial)
                        {
                            other.associations.remove(i);
                        }
                        save(staging, &other);
                    }
                }
                staging.remove(Space::Widgets, serial.into_bytes());
                Ok(())
            })
            .await
    }

    async fn associate(&self, serial: &str, peer: &str, port: Port) -> Result<(), Error> {
        if serial == peer {
            return Err(self_association());
        }
        let (serial, peer) = (serial.to_owned(), peer.to_owned());
        self.store
            .write(move |staging| {
                let mut a = load(staging, &serial)?.ok_or_else(|| widget_not_found(&serial))?;
                let mut b = load(staging, &peer)?.ok_or_else(|| widget_not_found(&peer))?;
                if let Some(refusal) = a.refuse(port, &peer).or_else(|| b.refuse(port, &serial)) {
                    return Err(refusal);
                }
                a.associations.push((port, peer.clone()));
                b.associations.push((port, serial.clone()));
                save(staging, &a);
                save(staging, &b);
                Ok(())
            })
            .await
    }

    async fn dissociate(&self, serial: &str, peer: &str, port: Port) -> Result<(), Error> {
        let (serial, peer) = (serial.to_owned(), peer.to_owned());
        self.store
            .write(move |staging| {
                let missing = || association_not_found(&serial, &peer, port);
                let mut a = load(staging, &serial)?.ok_or_else(missing)?;
                let i = a
                    .associations
                    .iter()
                    .position(|(p, s)| *p == port && *s == peer)
                    .ok_or_else(missing)?;
                a.associations.remove(i);
                save(staging, &a);
                if let Some(mut b) = load(staging, &peer)? {
                    if let Some(j) = b
                        .associations
                        .iter()
                        .position(|(p, s)| *p == port && *s == serial)
                    {
                        b.associations.remove(j);
                    }
                    save(staging, &b);
                }
                Ok(())
            })
            .await
    }
}
