//! The owner's round trip through a real spreadsheet program (DESIGN §15, issue 19):
//! LibreOffice Calc, headless, with its default filters. Exported workbooks and CSV files
//! are converted as an owner's LibreOffice would, answered with names beyond ASCII, and
//! imported; every answer lands and the names survive. The test command installs
//! `libreoffice-calc`; without it this test fails, saying so.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;

use crate::flow::submit;
use crate::harness::{Env, eventually, wait};

const NAME: &str = "Jürgen Zoë";
const NOTE: &str = "erledigt – danke";

fn soffice() -> PathBuf {
    let found = Command::new("sh")
        .args(["-c", "command -v soffice"])
        .output()
        .unwrap();
    assert!(
        found.status.success(),
        "LibreOffice (soffice) is not installed: tests/run installs libreoffice-calc; this test needs it"
    );
    PathBuf::from(String::from_utf8(found.stdout).unwrap().trim())
}

/// `soffice --headless --convert-to EXT` with the default filters; the converted file.
fn convert(file: &Path, ext: &str, profile: &Path) -> PathBuf {
    let out = file.parent().unwrap().join(format!("lo-{ext}"));
    let status = Command::new(soffice())
        .arg(format!(
            "-env:UserInstallation=file://{}",
            profile.display()
        ))
        .args(["--headless", "--convert-to", ext, "--outdir"])
        .arg(&out)
        .arg(file)
        .output()
        .unwrap();
    assert!(status.status.success(), "{status:?}");
    let name = file.with_extension(ext);
    let converted = out.join(name.file_name().unwrap());
    assert!(converted.exists(), "{status:?}");
    converted
}

/// The owner's edit of a CSV: `DONE`, their name and a note on the rows of `tasks`.
fn answer(csv_text: &str, tasks: &[&str]) -> String {
    let text = csv_text.trim_start_matches('\u{feff}');
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(text.as_bytes());
    let header: Vec<String> = rdr.headers().unwrap().iter().map(String::from).collect();
    let col = |n: &str| header.iter().position(|h| h.ends_with(n)).unwrap();
    let (id, res, by, note) = (
        col("task_id"),
        col("resolution"),
        col("resolved_by"),
        col("note"),
    );
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(&header).unwrap();
    for r in rdr.records() {
        let mut r: Vec<String> = r.unwrap().iter().map(String::from).collect();
        if tasks.contains(&r[id].as_str()) {
            r[res] = "DONE".into();
            r[by] = NAME.into();
            r[note] = NOTE.into();
        }
        w.write_record(&r).unwrap();
    }
    String::from_utf8(w.into_inner().unwrap()).unwrap()
}

fn import(env: &Env, file: &Path) -> String {
    let out = env.cli(&["tasks", "import", file.to_str().unwrap()]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{}: {text}", file.display());
    text
}

#[tokio::test]
async fn answers_survive_a_round_trip_through_libreoffice() {
    let env = Env::new();
    let profile = tempfile::tempdir().unwrap();
    let _agent = env.start().await;
    for who in ["ada", "grace"] {
        submit(
            &env,
            json!({ "requestedFor": [who], "clientMetadata": { "ticket": "CHG-7" },
                "requestedItems": [{ "type": "ENTITLEMENT", "id": "ent-view" }] }),
        );
    }
    let store = env.store();
    let tasks = eventually(10, "four tasks", || {
        let t = wait(store.tasks(provd::store::tasks::TaskFilter {
            open_only: true,
            ..Default::default()
        }))
        .unwrap();
        async move { (t.len() == 4).then_some(t) }
    })
    .await;
    let ids: Vec<String> = tasks.iter().map(|t| format!("T{}", t.id)).collect();
    let dir = env.path();

    // 1. The workbook, saved as CSV by LibreOffice's default filter, answered, imported.
    let xlsx = dir.join("tasks.xlsx");
    let out = env.cli(&[
        "tasks",
        "export",
        "--format",
        "xlsx",
        "--out",
        xlsx.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let as_csv = convert(&xlsx, "csv", profile.path());
    let text = String::from_utf8_lossy(&std::fs::read(&as_csv).unwrap()).to_string();
    assert!(
        text.starts_with("resolution,note,resolved_by,operation"),
        "the columns to fill come first: {text}"
    );
    assert!(text.contains("CHG-7"), "the ticket is on the row: {text}");
    let answered = dir.join("answered-from-xlsx.csv");
    std::fs::write(&answered, answer(&text, &[&ids[0], &ids[1]])).unwrap();
    assert!(import(&env, &answered).contains("2 resolved"));

    // 2. The CSV export, answered, opened by LibreOffice (which reads it as Latin-1) and
    //    saved as xlsx: the workbook is imported as it is.
    let csv_path = dir.join("tasks.csv");
    assert!(
        env.cli(&[
            "tasks",
            "export",
            "--excel",
            "--out",
            csv_path.to_str().unwrap()
        ])
        .status
        .success()
    );
    let exported = String::from_utf8(std::fs::read(&csv_path).unwrap()).unwrap();
    let third = dir.join("third.csv");
    std::fs::write(&third, format!("\u{feff}{}", answer(&exported, &[&ids[2]]))).unwrap();
    let lo_xlsx = convert(&third, "xlsx", profile.path());
    let report = import(&env, &lo_xlsx);
    assert!(
        report.contains("1 resolved") && report.contains("xlsx"),
        "{report}"
    );

    // 3. The same way, then saved back to CSV by LibreOffice: csv -> xlsx -> csv.
    let fourth = dir.join("fourth.csv");
    std::fs::write(
        &fourth,
        format!("\u{feff}{}", answer(&exported, &[&ids[3]])),
    )
    .unwrap();
    let back = convert(
        &convert(&fourth, "xlsx", profile.path()),
        "csv",
        profile.path(),
    );
    assert!(import(&env, &back).contains("1 resolved"));

    let done = wait(store.tasks(provd::store::tasks::TaskFilter::default())).unwrap();
    for t in &done {
        assert_eq!(t.status, provd::store::rules::TaskStatus::Done, "{t:?}");
        assert_eq!(t.resolved_by.as_deref(), Some(NAME), "{t:?}");
        assert_eq!(t.note.as_deref(), Some(NOTE), "{t:?}");
    }
}
