//! Catching a panic without the panic hook printing it: for code that runs arrow-rs on input
//! that may make it panic (an upload's messages), or that a bug could make panic (a merge),
//! where one failure must not take more down with it, nor fill the log with a backtrace.

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Once;

thread_local! {
    /// Set while this thread runs a closure under [`catch`].
    static CATCHING: Cell<bool> = const { Cell::new(false) };
}

/// Run `f`; if it panics, the panic's message, with the hook silent for it. The hook
/// installed (once, process-wide) defers to the one before it for every other panic.
pub(crate) fn catch<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !CATCHING.get() {
                previous(info);
            }
        }));
    });
    let was_catching = CATCHING.replace(true);
    let result = catch_unwind(AssertUnwindSafe(f));
    CATCHING.set(was_catching);
    result.map_err(|panic| {
        panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic without a message".into())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caught_panic_is_its_message_and_the_hook_is_left_as_it_was() {
        assert_eq!(catch(|| 7), Ok(7));
        let caught = catch(|| -> u8 { panic!("index {} out of bounds", 9) });
        assert_eq!(caught, Err("index 9 out of bounds".to_string()));
        assert!(!CATCHING.get(), "only while catching");
        // Outside `catch`, a panic still reaches the previous hook and unwinds as usual.
        let outside = std::thread::spawn(|| panic!("not caught")).join();
        assert!(outside.is_err());
    }
}
