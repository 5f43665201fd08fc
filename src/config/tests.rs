use std::path::Path;

use super::*;

/// A complete configuration directory in a temp dir; `edit` can change any file first.
fn write_config(dir: &Path) {
    std::fs::create_dir_all(dir.join("sources")).unwrap();
    std::fs::write(
        dir.join("provd.toml"),
        "[agent]\nstate_dir = \"state\"\nspool_dir = \"spool\"\ntime_zone = \"Europe/Berlin\"\n[api]\ntokens_file = \"tokens\"\n",
    )
    .unwrap();
    std::fs::write(dir.join("sources/flat.toml"), "id = \"flat\"\ntype = \"manual\"\nowner = \"o@example.com\"\n[retry]\nmax_attempts = 3\nretryable_errors = [\"(?i)busy\"]\n").unwrap();
    std::fs::write(
        dir.join("catalog.toml"),
        "[[entitlement]]\nid = \"e1\"\nsource = \"flat\"\nattribute = \"groups\"\nvalue = \"G1\"\n",
    )
    .unwrap();
    std::fs::write(dir.join("identities.csv"), "id,firstName\nu1,Ada\n").unwrap();
}

#[test]
fn loads_and_resolves_relative_paths_against_the_naming_file() {
    let tmp = tempfile::tempdir().unwrap();
    write_config(tmp.path());
    let c = Config::load(&tmp.path().join("provd.toml")).unwrap();
    assert_eq!(c.agent.state_dir, tmp.path().join("state"));
    assert_eq!(c.agent.spool_dir, Some(tmp.path().join("spool")));
    assert_eq!(c.api.tokens_file, tmp.path().join("tokens"));
    assert_eq!(c.agent.workers, 8, "default");
    assert_eq!(c.sources["flat"].retry.max_attempts, 3);
    assert_eq!(
        c.sources["flat"].retry.initial,
        std::time::Duration::from_secs(2),
        "default kept"
    );
    assert_eq!(c.sources["flat"].retryable_errors.len(), 1);
    assert!(c.catalog.contains(ItemType::Entitlement, "e1"));
    assert_eq!(c.identities["u1"].attributes["firstName"], "Ada");
    assert_eq!(c.agent.time_zone_name, "Europe/Berlin");
}

#[test]
fn an_unknown_key_in_provd_toml_is_named_with_its_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    write_config(tmp.path());
    std::fs::write(tmp.path().join("provd.toml"), "[agent]\nworkerz = 3\n").unwrap();
    let p = Config::load(&tmp.path().join("provd.toml")).unwrap_err();
    let text = p.to_string();
    assert!(text.contains("provd.toml"), "{text}");
    assert!(text.contains("workerz"), "{text}");
    assert!(text.contains("provd.toml:2:1: "), "{text}");
    assert_eq!(text.lines().count(), 1, "one problem, one line: {text}");
}

/// Issue 35: errors in sources/*.toml named no line, and one bad source made every item
/// naming it say "not configured" as well.
#[test]
fn a_bad_source_file_names_line_and_column_and_nothing_cascades() {
    let tmp = tempfile::tempdir().unwrap();
    write_config(tmp.path());
    let d = tmp.path();
    std::fs::write(
        d.join("sources/flat.toml"),
        "id = \"flat\"\ntype = \"manual\"\nowner = \"o@example.com\"\n\n[retry]\nmax_attempts = 0\n",
    )
    .unwrap();
    std::fs::write(
        d.join("sources/saas.toml"),
        "id = \"saas\"\ntype = \"scim\"\nowner = \"o\"\nbase_url = \"http://127.0.0.1:1\"\n[account]\ncorrelation = \"userName\"\n  colour = 3\n",
    )
    .unwrap();
    std::fs::write(
        d.join("sources/broken.toml"),
        "id = \"broken\"\ntype = = \"ldap\"\n",
    )
    .unwrap();
    let mut catalog = String::new();
    for (i, s) in ["flat", "flat", "saas", "broken", "broken"]
        .iter()
        .enumerate()
    {
        catalog += &format!(
            "[[entitlement]]\nid = \"e{i}\"\nsource = \"{s}\"\nattribute = \"g\"\nvalue = \"v{i}\"\n"
        );
    }
    std::fs::write(d.join("catalog.toml"), catalog).unwrap();
    let Problems(problems) = Config::load(&d.join("provd.toml")).unwrap_err();
    let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    assert_eq!(problems.len(), 3, "its own problems, no cascade: {text:#?}");
    let of = |file: &str| {
        text.iter()
            .find(|t| t.contains(file))
            .unwrap_or_else(|| panic!("{file}: {text:#?}"))
            .clone()
    };
    assert!(
        of("flat.toml").contains("flat.toml:6:1: retry.max_attempts:"),
        "{text:#?}"
    );
    let saas = of("saas.toml");
    assert!(
        saas.contains("saas.toml:7:3: ") && saas.contains("colour"),
        "{saas}"
    );
    let broken = of("broken.toml");
    assert!(broken.contains("broken.toml:2:8: "), "{broken}");
    assert!(!broken.contains('|'), "no excerpt lines: {broken}");
    assert!(
        !text.iter().any(|t| t.contains("not configured")),
        "{text:#?}"
    );
}

#[test]
fn every_problem_across_files_is_reported_together() {
    let tmp = tempfile::tempdir().unwrap();
    write_config(tmp.path());
    let d = tmp.path();
    std::fs::write(
        d.join("provd.toml"),
        "[agent]\ntime_zone = \"Mars/Base\"\nworkers = 0\n",
    )
    .unwrap();
    std::fs::write(
        d.join("sources/zdup.toml"),
        "id = \"flat\"\ntype = \"manual\"\nowner = \"x\"\n",
    )
    .unwrap();
    std::fs::write(
        d.join("sources/typo.toml"),
        "id = \"t\"\ntype = \"manual\"\nowner = \"x\"\nremind_afterr = \"3d\"\n",
    )
    .unwrap();
    std::fs::write(
        d.join("sources/kind.toml"),
        "id = \"k\"\ntype = \"ftp\"\nowner = \"x\"\n",
    )
    .unwrap();
    std::fs::write(
        d.join("sources/re.toml"),
        "id = \"r\"\ntype = \"manual\"\nowner = \"x\"\n[retry]\nretryable_errors = [\"(\"]\n",
    )
    .unwrap();
    std::fs::write(
        d.join("catalog.toml"),
        "[[entitlement]]\nid = \"e1\"\nsource = \"nowhere\"\nattribute = \"g\"\nvalue = \"v\"\n[[role]]\nid = \"r\"\nentitlements = [\"e9\"]\n",
    )
    .unwrap();
    std::fs::write(d.join("identities.csv"), "id\nu1\nu1\n").unwrap();
    let Problems(problems) = Config::load(&d.join("provd.toml")).unwrap_err();
    let got: Vec<(String, String)> = problems
        .iter()
        .map(|p| {
            (
                p.file.file_name().unwrap().to_string_lossy().into_owned(),
                p.key.clone(),
            )
        })
        .collect();
    let expect = [
        ("provd.toml", "agent.time_zone"),
        ("provd.toml", "agent.workers"),
        ("zdup.toml", "id"),
        ("kind.toml", "type"),
        ("re.toml", "retry.retryable_errors[0]"),
        ("typo.toml", ""),
        ("catalog.toml", "entitlement[0].source"),
        ("catalog.toml", "role[0].entitlements[0]"),
        ("identities.csv", "line 3"),
    ];
    for (file, key) in expect {
        assert!(
            got.contains(&(file.to_string(), key.to_string())),
            "missing {file} {key} in {got:?}"
        );
    }
    assert!(
        problems.iter().any(|p| p.message.contains("remind_afterr")),
        "{problems:?}"
    );
}

#[test]
fn secret_files_must_be_readable_and_secret_variables_set() {
    let tmp = tempfile::tempdir().unwrap();
    write_config(tmp.path());
    let c = Config::load(&tmp.path().join("provd.toml")).unwrap();
    let mut source = c.sources["flat"].clone();
    std::fs::write(tmp.path().join("sources/secret"), "s3cret").unwrap();
    source.settings = toml::from_str(
        "token_file = \"secret\"\n[oauth]\nclient_secret_file = \"missing\"\npassword_env = \"PROVD_TEST_SURELY_UNSET_VAR\"\n",
    )
    .unwrap();
    let problems = source.check_secrets();
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["oauth.client_secret_file", "oauth.password_env"]);
    assert!(!problems.iter().any(|p| p.message.contains("s3cret")));
}

#[test]
fn an_unknown_key_in_an_http_source_lists_every_valid_key() {
    let tmp = tempfile::tempdir().unwrap();
    write_config(tmp.path());
    std::fs::write(
        tmp.path().join("sources/saas.toml"),
        "id = \"saas\"\ntype = \"scim\"\nowner = \"o\"\nbase_url = \"http://127.0.0.1:1\"\nbase_ulr = \"x\"\n[account]\ncorrelation = \"userName\"\n[account.attributes]\nuserName = \"{id}\"\n",
    )
    .unwrap();
    let e = Config::load(&tmp.path().join("provd.toml")).unwrap_err();
    let text = e.to_string();
    assert!(text.contains("base_ulr"), "{text}");
    for key in [
        "base_url",
        "token_file",
        "timeout",
        "tls_ca_file",
        "oauth",
        "owner",
        "retry",
        "account",
    ] {
        assert!(
            text.contains("valid keys in a scim source file:") && text.contains(key),
            "{key}: {text}"
        );
    }
}

#[test]
fn paths_are_normalised_but_never_through_a_link() {
    assert_eq!(normalize(Path::new("config/../var")), Path::new("var"));
    assert_eq!(normalize(Path::new("./config/./x")), Path::new("config/x"));
    assert_eq!(normalize(Path::new("../var")), Path::new("../var"));
    assert_eq!(
        normalize(Path::new("/etc/provd/../../var")),
        Path::new("/var")
    );
    assert_eq!(normalize(Path::new("/..")), Path::new("/"));
    assert_eq!(normalize(Path::new("a/..")), Path::new("."));
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("real/conf")).unwrap();
    std::os::unix::fs::symlink(tmp.path().join("real/conf"), tmp.path().join("link")).unwrap();
    let through = tmp.path().join("link/../var");
    assert_eq!(normalize(&through), through, "a link's .. stays");
    // The shipped layout: ./config/provd.toml names ../var.
    write_config(tmp.path());
    std::fs::write(
        tmp.path().join("provd.toml"),
        "[agent]\nstate_dir = \"../state\"\n",
    )
    .unwrap();
    let c = Config::load(&tmp.path().join("provd.toml")).unwrap();
    assert_eq!(
        c.agent.state_dir,
        tmp.path().parent().unwrap().join("state")
    );
}

#[test]
fn the_agent_is_named_by_config_or_host_and_pid() {
    let tmp = tempfile::tempdir().unwrap();
    write_config(tmp.path());
    let c = Config::load(&tmp.path().join("provd.toml")).unwrap();
    assert_eq!(c.agent.name, default_agent_name());
    assert!(c.agent.name.ends_with(&format!(":{}", std::process::id())));
    std::fs::write(
        tmp.path().join("provd.toml"),
        "[agent]\nstate_dir = \"state\"\nname = \"provd-a\"\n",
    )
    .unwrap();
    let c = Config::load(&tmp.path().join("provd.toml")).unwrap();
    assert_eq!(c.agent.name, "provd-a");
}

#[test]
fn evidence_settings_are_checked_where_they_belong() {
    let tmp = tempfile::tempdir().unwrap();
    write_config(tmp.path());
    let flat = tmp.path().join("sources/flat.toml");
    std::fs::write(
        &flat,
        "id = \"flat\"\ntype = \"manual\"\nowner = \"o@example.com\"\nreconcile_every = \"1h\"\n[export]\nkey = \"id\"\nentitlements = { column = \"roles\" }\nattributes = { groups = \"g\" }\nmax_drop = \"a fifth\"\n",
    )
    .unwrap();
    let text = Config::load(&tmp.path().join("provd.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("flat.toml:4:1: reconcile_every: a manual source cannot be read back"),
        "{text}"
    );
    assert!(
        text.contains(
            "flat.toml:8:1: export.attributes: give export.entitlements or export.attributes, not both"
        ),
        "{text}"
    );
    assert!(
        text.contains("flat.toml:9:1: export.max_drop: `a fifth`: a share like \"20%\""),
        "{text}"
    );
    assert_eq!(max_drop("20%"), Ok(0.2));
}
