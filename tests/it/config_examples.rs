//! Every example configuration shipped in the repository is valid for this binary, so the
//! documentation and the deployment artefacts cannot drift from the parser.

use okta_postman_sync::config::Config;

#[test]
fn every_shipped_example_config_parses() {
    let root = env!("CARGO_MANIFEST_DIR");
    let files = [
        "config/okta-postman-sync.example.toml",
        "deploy/systemd/config.example.toml",
        "deploy/kubernetes/base/config.toml",
    ];
    for f in files {
        let text =
            std::fs::read_to_string(format!("{root}/{f}")).unwrap_or_else(|e| panic!("{f}: {e}"));
        let c = Config::parse(&text).unwrap_or_else(|e| panic!("{f} does not parse: {e}"));
        assert_eq!(c.sync.max_deactivations, 25, "{f}: documented default");
    }
}
