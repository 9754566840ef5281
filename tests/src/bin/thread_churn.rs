//! `thread-churn FILE N`: N threads one after another, each changing
//! FILE's mode once and exiting: a process whose threads come and go, as
//! a thread-per-request server's do (tests/tests/loss.rs).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

fn main() {
    let mut args = std::env::args_os().skip(1);
    let (Some(file), Some(n)) = (args.next(), args.next()) else {
        eprintln!("usage: thread-churn FILE N");
        std::process::exit(2);
    };
    let file = Arc::new(CString::new(file.as_bytes()).expect("a path without NUL"));
    let n: usize = n
        .to_str()
        .and_then(|n| n.parse().ok())
        .expect("N: a number");
    for _ in 0..n {
        let file = Arc::clone(&file);
        std::thread::spawn(move || {
            // SAFETY: a NUL-terminated path we own.
            if unsafe { libc::chmod(file.as_ptr(), 0o600) } != 0 {
                panic!("chmod: {}", std::io::Error::last_os_error());
            }
        })
        .join()
        .expect("the thread ran");
    }
}
