//! A list of named checks that reports every failure at once, so one run
//! of a suite shows everything that is wrong, and counts what it checked.

use std::fmt::Debug;

#[derive(Default)]
pub struct Checks {
    passed: usize,
    failures: Vec<String>,
}

impl Checks {
    pub fn check(&mut self, name: &str, ok: bool, detail: impl Debug) {
        if ok {
            self.passed += 1;
        } else {
            self.failures.push(format!("{name}: {detail:?}"));
        }
    }

    pub fn eq<T: PartialEq + Debug>(&mut self, name: &str, actual: T, expected: T) {
        let ok = actual == expected;
        self.check(name, ok, format!("expected {expected:?}, got {actual:?}"));
    }

    pub fn count(&self) -> usize {
        self.passed + self.failures.len()
    }

    /// Panics with every failure, or returns how many checks passed.
    pub fn finish(self, suite: &str) -> usize {
        if !self.failures.is_empty() {
            panic!("{suite}: {} of {} checks failed:\n  {}", self.failures.len(), self.count(), self.failures.join("\n  "));
        }
        println!("{suite}: all {} checks passed", self.passed);
        self.passed
    }
}
