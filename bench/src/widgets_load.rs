//! `strata widgets load`: fills the embedded store with N widgets (random ports) and about N/2 random
//! associations, through the same widgets port the API uses, every write durable. Serial numbers and choices
//! come from `--seed`, so running it again with the same arguments resumes (or repeats) the same load: what
//! exists already is skipped.

use indicatif::{ProgressBar, ProgressStyle};
use std::sync::Arc;
use std::time::Instant;
use strata_core::widgets::{Port, Widget, Widgets};
use tokio::task::JoinSet;

/// Requests in flight at once: enough to fill the writer's batches.
const IN_FLIGHT: usize = 512;

/// What a load did.
#[derive(Debug)]
pub struct Loaded {
    pub created: u64,
    pub associated: u64,
    pub skipped: u64,
    pub seconds: f64,
}

/// Deterministic pseudo-random numbers (splitmix64), so a seed always means the same load.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

pub fn serial(seed: u64, i: u64) -> String {
    format!("w{seed}-{i:010}")
}

fn widget(seed: u64, i: u64) -> Widget {
    let r = mix(seed ^ mix(i));
    let slots = 1 + (r % 3) as usize;
    let ports = (0..slots)
        .map(|k| Port::ALL[((r >> (8 + 2 * k)) % 3) as usize])
        .collect();
    Widget {
        serial: serial(seed, i),
        name: format!("widget {i}"),
        ports,
        associations: Vec::new(),
    }
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{what:>12} [{{bar:40}}] {{pos}}/{{len}} {{per_sec}} eta {{eta}}"
        ))
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar
}

pub async fn load(
    widgets: Arc<dyn Widgets>,
    count: u64,
    seed: u64,
) -> Result<Loaded, strata_core::Error> {
    let started = Instant::now();
    let (mut created, mut associated, mut skipped) = (0, 0, 0);
    let progress = bar(count, "widgets");
    let mut tasks: JoinSet<Result<(), strata_core::Error>> = JoinSet::new();
    for i in 0..count {
        if tasks.len() >= IN_FLIGHT {
            match tasks
                .join_next()
                .await
                .expect("tasks are running")
                .expect("no panics")
            {
                Ok(()) => created += 1,
                Err(e) if e.code == "duplicate_serial_number" => skipped += 1,
                Err(e) => return Err(e),
            }
            progress.inc(1);
        }
        let widgets = widgets.clone();
        tasks.spawn(async move { widgets.create(&widget(seed, i)).await });
    }
    while let Some(done) = tasks.join_next().await {
        match done.expect("no panics") {
            Ok(()) => created += 1,
            Err(e) if e.code == "duplicate_serial_number" => skipped += 1,
            Err(e) => return Err(e),
        }
        progress.inc(1);
    }
    progress.finish();
    let pairs = count / 2;
    let progress = bar(pairs, "associations");
    for j in 0..pairs {
        if tasks.len() >= IN_FLIGHT {
            if tasks
                .join_next()
                .await
                .expect("tasks are running")
                .expect("no panics")
                .is_ok()
            {
                associated += 1;
            }
            progress.inc(1);
        }
        let r = mix(seed.rotate_left(17) ^ mix(j));
        let (a, b) = (r % count, (r >> 32) % count);
        // A port type the first widget has, so most attempts can succeed.
        let ports = widget(seed, a).ports;
        let port = ports[((r >> 60) % ports.len() as u64) as usize];
        let widgets = widgets.clone();
        tasks.spawn(async move {
            // Refusals (full, already associated, self) are part of a random load, not failures.
            match widgets
                .associate(&serial(seed, a), &serial(seed, b), port)
                .await
            {
                Err(e)
                    if e.kind == strata_core::Kind::Unavailable
                        || e.kind == strata_core::Kind::Internal =>
                {
                    Err(e)
                }
                Err(_) => Err(strata_core::Error::invalid("refused", "")),
                Ok(()) => Ok(()),
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        match done.expect("no panics") {
            Ok(()) => associated += 1,
            Err(e) if e.code == "refused" => {}
            Err(e) => return Err(e),
        }
        progress.inc(1);
    }
    progress.finish();
    Ok(Loaded {
        created,
        associated,
        skipped,
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_load_is_durable_valid_and_resumable() {
        let dir = tempfile::tempdir().unwrap();
        let store = strata_embedded::Store::open(dir.path()).unwrap();
        let widgets = store.stores(&strata_core::Settings::default()).widgets;
        let first = load(widgets.clone(), 2000, 5).await.unwrap();
        assert_eq!((first.created, first.skipped), (2000, 0));
        assert!(first.associated > 100, "{} associations", first.associated);
        let again = load(widgets.clone(), 2000, 5).await.unwrap();
        assert_eq!(
            (again.created, again.skipped, again.associated),
            (0, 2000, 0),
            "resuming repeats nothing"
        );
        drop((widgets, store));
        let store = strata_embedded::Store::open(dir.path()).unwrap();
        let widgets = store.stores(&strata_core::Settings::default()).widgets;
        let mut links = 0;
        for i in 0..2000 {
            let w = widgets
                .get(&serial(5, i))
                .await
                .unwrap()
                .expect("every widget is there after reopening");
            for port in Port::ALL {
                assert!(w.used(port) <= w.capacity(port));
            }
            for (port, peer) in &w.associations {
                let other = widgets.get(peer).await.unwrap().unwrap();
                assert!(other.is_associated(*port, &w.serial), "symmetric");
                links += 1;
            }
        }
        assert_eq!(links, 2 * first.associated);
    }

    #[test]
    fn the_load_is_deterministic() {
        assert_eq!(widget(7, 42), widget(7, 42));
        assert_ne!(
            widget(7, 42).ports.len() + widget(8, 42).ports.len() + widget(9, 42).ports.len(),
            0
        );
        assert!((0..1000).all(|i| (1..=3).contains(&widget(1, i).ports.len())));
    }
}
