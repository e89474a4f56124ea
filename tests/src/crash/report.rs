//! What a run found: operations per service, answers, broken invariants, timings.

use std::collections::BTreeMap;

/// Operations per service.
#[derive(Debug, Default, Clone, Copy)]
pub struct PerService {
    pub kv: u64,
    pub line: u64,
    pub certificates: u64,
    pub widgets: u64,
    pub counters: u64,
}

impl PerService {
    pub(super) fn total(&self) -> u64 {
        self.kv + self.line + self.certificates + self.widgets + self.counters
    }
}

impl std::fmt::Display for PerService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (kv {}, line protocol {}, certificates {}, widgets {}, counters {})",
            self.total(),
            self.kv,
            self.line,
            self.certificates,
            self.widgets,
            self.counters
        )
    }
}

/// The outcome of a run.
#[derive(Debug, Default)]
pub struct Report {
    /// `embedded`, or `dynamodb` with its fault rate.
    pub store: String,
    pub seed: u64,
    pub rounds: u32,
    pub eventual_rounds: u32,
    /// Requests answered with the outcome they asked for (or a refusal the contract allows, such as
    /// `insufficient_shares`), whose effect the checks then hold the server to.
    pub acked: PerService,
    /// Requests sent whose answer never came: in flight at the kill. For a strata-client call: the call
    /// ended without an answer (its retries found the server gone).
    pub unanswered: PerService,
    /// Requests answered `429`/`503` (a strata-client call: ended with one, its retries spent), or a
    /// widget create or association refused after retries, an earlier attempt of which may have applied:
    /// applied or not, nobody knows (the keyed ones are sent again).
    pub unknown: PerService,
    /// Error answers by status and code, error-contract violations, client retries.
    pub tally: Tally,
    /// On DynamoDB: what went through the fault proxy.
    pub proxy: Option<crate::fault_proxy::Stats>,
    /// Unanswered certificate issues and keyed increments retried after the restart with their key.
    pub retried: u64,
    /// Acknowledged effects missing (or changed) after a restart.
    pub lost: u64,
    /// The same, by service.
    pub lost_by_service: BTreeMap<&'static str, u64>,
    /// Certificate numbers missing from 1..=issued count of a class (or listed twice).
    pub gaps: u64,
    /// Every other broken invariant, one line each (lost and gaps are listed here too).
    pub violations: Vec<String>,
    /// From spawning the restarted server to its first `200` on `/health`, per round.
    pub restart_ms: Vec<f64>,
    /// Time spent checking after each restart.
    pub check_ms: Vec<f64>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.lost == 0
            && self.gaps == 0
            && self.violations.is_empty()
            && self.tally.contract_violations == 0
    }

    /// Violations per invariant: the `[tag]` a message starts with (`lost`, `gap`, or `other` without one).
    pub fn by_invariant(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for v in &self.violations {
            let tag = if let Some(rest) = v.strip_prefix('[') {
                rest.split(']').next().unwrap_or("other").to_owned()
            } else if v.starts_with("lost:") {
                "lost".to_owned()
            } else if v.starts_with("gap:") {
                "gap".to_owned()
            } else {
                "other".to_owned()
            };
            *out.entry(tag).or_default() += 1;
        }
        if self.tally.contract_violations > 0 {
            out.insert("error-contract".to_owned(), self.tally.contract_violations);
        }
        out
    }

    pub(super) fn lost(&mut self, service: &'static str, what: String) {
        self.lost += 1;
        *self.lost_by_service.entry(service).or_default() += 1;
        self.violations.push(format!("lost: {what}"));
    }

    pub(super) fn gap(&mut self, what: String) {
        self.gaps += 1;
        self.violations.push(format!("gap: {what}"));
    }

    pub(super) fn violation(&mut self, what: String) {
        self.violations.push(what);
    }

    /// The figures, for people.
    pub fn summary(&self) -> String {
        let stats = |v: &[f64]| {
            let mut v = v.to_vec();
            v.sort_by(f64::total_cmp);
            let median = v.get(v.len() / 2).copied().unwrap_or(0.0);
            let max = v.last().copied().unwrap_or(0.0);
            format!("median {median:.0} ms, max {max:.0} ms")
        };
        let mut out = String::new();
        out.push_str("crash-recovery report\n");
        out.push_str(&format!("  store           {}\n", self.store));
        out.push_str(&format!(
            "  rounds          {} ({} in eventual counter mode)\n",
            self.rounds, self.eventual_rounds
        ));
        out.push_str(&format!(
            "  seed            {} (STRATA_CRASH_SEED={} repeats the schedule)\n",
            self.seed, self.seed
        ));
        out.push_str(&format!("  acknowledged    {}\n", self.acked));
        out.push_str(&format!("  unanswered      {}\n", self.unanswered));
        out.push_str(&format!(
            "  429/503         {} (outcome unknown: keyed ones sent again)\n",
            self.unknown
        ));
        out.push_str(&format!(
            "  client retries  {} (after 429, 503, 409 request_in_progress or no answer, same Idempotency-Key)\n",
            self.tally.retries
        ));
        let errors: Vec<String> = self
            .tally
            .errors
            .iter()
            .map(|(label, n)| format!("{label} ×{n}"))
            .collect();
        out.push_str(&format!(
            "  error answers   {}{}\n",
            self.tally.errors.values().sum::<u64>(),
            if errors.is_empty() {
                String::new()
            } else {
                format!(" ({})", errors.join(", "))
            }
        ));
        out.push_str(&format!(
            "  error contract  {} violations (not the error JSON, undocumented status, 429/503 without retry-after)\n",
            self.tally.contract_violations
        ));
        if let Some(proxy) = &self.proxy {
            for line in proxy.to_string().lines() {
                out.push_str(&format!("  {line}\n"));
            }
        }
        out.push_str(&format!(
            "  retried         {} (unanswered issues and keyed increments, with their Idempotency-Key)\n",
            self.retried
        ));
        let by_service: Vec<String> = self
            .lost_by_service
            .iter()
            .map(|(service, n)| format!("{service} {n}"))
            .collect();
        out.push_str(&format!(
            "  lost            {}{}\n",
            self.lost,
            if by_service.is_empty() {
                String::new()
            } else {
                format!(" ({})", by_service.join(", "))
            }
        ));
        out.push_str(&format!("  gaps            {}\n", self.gaps));
        out.push_str(&format!("  violations      {}\n", self.violations.len()));
        let invariants: Vec<String> = self
            .by_invariant()
            .iter()
            .map(|(tag, n)| format!("{tag} {n}"))
            .collect();
        if !invariants.is_empty() {
            out.push_str(&format!("  by invariant    {}\n", invariants.join(", ")));
        }
        out.push_str(&format!("  restart         {}\n", stats(&self.restart_ms)));
        out.push_str(&format!("  check           {}\n", stats(&self.check_ms)));
        // The first few of each invariant, so that one kind does not hide the others.
        let mut shown: BTreeMap<String, usize> = BTreeMap::new();
        let all: Vec<&String> = self.tally.examples.iter().chain(&self.violations).collect();
        for v in &all {
            let tag = v
                .strip_prefix('[')
                .and_then(|r| r.split(']').next())
                .unwrap_or(if v.starts_with("lost:") {
                    "lost"
                } else {
                    "other"
                })
                .to_owned();
            let n = shown.entry(tag).or_default();
            *n += 1;
            if *n <= 6 {
                out.push_str(&format!("    {v}\n"));
            }
        }
        let hidden: usize = shown.values().map(|n| n.saturating_sub(6)).sum();
        if hidden > 0 {
            out.push_str(&format!("    … and {hidden} more\n"));
        }
        out
    }
}

/// What the answers looked like, over a whole run: error answers by status and code, and the ones that
/// broke the error contract. Of a strata-client call, only the answer it ended with is seen.
#[derive(Debug, Default)]
pub struct Tally {
    /// `"503 store_unavailable"` → answers.
    pub errors: BTreeMap<String, u64>,
    /// Error answers that are not the contract's error JSON with a documented status (and `retry-after`
    /// on `429`/`503`).
    pub contract_violations: u64,
    /// The first few of them, per status and code.
    pub examples: Vec<String>,
    /// Requests a client sent again with the same `Idempotency-Key` after an answer that asked for it
    /// (`429`, `503`, `409 request_in_progress`) or none: each new strata-client call of a pending keyed
    /// write, and the retries within a call that failed (strata-client does not report those of a call
    /// that succeeded).
    pub retries: u64,
}
