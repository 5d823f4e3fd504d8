//! `sluice demo --input-dir DIR --exit-when-idle SECS`: counts the words of the files in
//! a directory, then stops by itself once no new input arrives.

use std::process::Command;

#[test]
fn demo_counts_a_directory_and_exits_when_idle() {
    let dir = tempfile::tempdir().unwrap();
    let (input, out, ckpt) = (
        dir.path().join("in"),
        dir.path().join("out"),
        dir.path().join("ckpt"),
    );
    std::fs::create_dir_all(&input).unwrap();
    std::fs::write(input.join("a.txt"), "river stream river\nsluice\n").unwrap();
    std::fs::write(input.join("b.txt"), "river gate\n").unwrap();
    std::fs::write(input.join(".hidden"), "ignored ignored\n").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args([
            "demo",
            "--quiet",
            "--batch-ms",
            "100",
            "--exit-when-idle",
            "1",
        ])
        .arg("--input-dir")
        .arg(&input)
        .arg("--output")
        .arg(&out)
        .arg("--checkpoint")
        .arg(&ckpt)
        .spawn()
        .unwrap();
    let mut status = None;
    for _ in 0..600 {
        status = child.try_wait().unwrap();
        if status.is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    if status.is_none() {
        child.kill().unwrap();
        child.wait().unwrap();
        panic!("the demo did not exit when idle");
    }
    assert!(status.unwrap().success());
    // The last batch file with content holds the cumulative counts of the words it touched.
    let mut totals = std::collections::BTreeMap::new();
    let mut names: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for p in names {
        for line in std::fs::read_to_string(p).unwrap().lines() {
            let (w, c) = line.split_once(' ').unwrap();
            totals.insert(w.to_string(), c.parse::<u64>().unwrap());
        }
    }
    let want: std::collections::BTreeMap<String, u64> =
        [("gate", 1), ("river", 3), ("sluice", 1), ("stream", 1)]
            .into_iter()
            .map(|(w, c)| (w.to_string(), c))
            .collect();
    assert_eq!(totals, want);
}
