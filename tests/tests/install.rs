//! Installing pg_tenancy over a running server. Its own test binary: crash.rs restarts the
//! cluster, which must not happen while this test holds connections.

use pg_tenancy_e2e::*;

/// Installing a build while the server runs writes a new file and renames it over the library:
/// a running backend keeps the old file (a different inode) and goes on working, instead of
/// crashing on a library overwritten in place.
#[test]
fn installing_over_a_running_server_replaces_the_library_without_touching_the_mapped_one() {
    let db = TestDb::new();
    let mut running = db.app_in(ACME, "alice");
    assert_eq!(count(&mut running, "app.projects"), 1);
    let script = |args: &[&str]| {
        let out = std::process::Command::new(repo_root().join(args[0])).args(&args[1..]).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let pg_config = script(&["scripts/cluster.sh", "pg-config", "test"]);
    let libdir = std::process::Command::new(&pg_config).arg("--pkglibdir").output().unwrap();
    let library = std::path::Path::new(String::from_utf8_lossy(&libdir.stdout).trim()).join("pg_tenancy.so");
    use std::os::unix::fs::MetadataExt;
    let before = std::fs::metadata(&library).unwrap().ino();
    script(&["scripts/install.sh", "--profile", "dev", "--pg-config", &pg_config, "--no-build"]);
    let after = std::fs::metadata(&library).unwrap().ino();
    assert_ne!(before, after, "the library was overwritten in place");
    assert_eq!(count(&mut running, "app.projects"), 1, "the running backend still works");
    assert_eq!(count(&mut db.app_in(GLOBEX, "gina"), "app.projects"), 1, "and so do new ones");
}
