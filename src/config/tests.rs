//! Unit tests of the config parser and validation.

use super::*;

const GOOD: &str = r#"
[interfaces]
internal = "eth1"
external = "eth0"
[nat]
internal_prefixes = ["100.64.0.0/10"]
external_pool = ["203.0.113.0/28", "192.0.2.200/29"]
"#;

fn parse(s: &str) -> Result<Config, ConfigError> {
    Config::parse(s, Path::new("/etc/cgnat.toml"))
}

fn err(s: &str) -> String {
    parse(s).unwrap_err().to_string()
}

#[test]
fn defaults_follow_the_rfcs() {
    let c = parse(GOOD).unwrap();
    assert_eq!(c.timeouts.udp, Duration::from_secs(300));
    assert_eq!(c.timeouts.tcp_established, Duration::from_secs(7440));
    assert_eq!(c.timeouts.tcp_opening, Duration::from_secs(240));
    assert_eq!(c.timeouts.tcp_closing, Duration::from_secs(240));
    assert_eq!(c.filtering.udp, Filtering::EndpointIndependent);
    assert!(!c.preserve_parity);
    assert_eq!(c.timeouts.icmp, Duration::from_secs(60));
    assert_eq!(c.port_quarantine, Duration::from_secs(120));
    assert_eq!(c.xdp_mode, XdpMode::Native);
    assert_eq!(c.pool_addrs.len(), 16 + 8);
    assert_eq!(c.pool_addrs[0], Ipv4Addr::new(203, 0, 113, 0));
    assert_eq!(c.pool_addrs[16], Ipv4Addr::new(192, 0, 2, 200));
    assert!(!c.one_armed());
}

#[test]
fn durations() {
    assert_eq!(parse_duration("2h4m").unwrap(), Duration::from_secs(7440));
    assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
    assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
    assert_eq!(parse_duration("1d").unwrap(), Duration::from_secs(86400));
    assert!(parse_duration("300").unwrap_err().contains("missing unit"));
    assert!(parse_duration("5x").unwrap_err().contains("unknown unit"));
    assert!(parse_duration("s").is_err());
    assert!(parse_duration("").is_err());
}

#[test]
fn pool_overlapping_internal_is_refused() {
    let e = err(&GOOD.replace("203.0.113.0/28", "100.64.1.0/24"));
    assert!(e.contains("/etc/cgnat.toml"), "{e}");
    assert!(e.contains("nat.external_pool"), "{e}");
    assert!(e.contains("REQ-7"), "{e}");
}

#[test]
fn errors_name_file_field_and_reason() {
    let e = err(&GOOD.replace("\"100.64.0.0/10\"", "\"100.64.0.0/33\""));
    assert!(
        e.contains("nat.internal_prefixes") && e.contains("not an IPv4 prefix"),
        "{e}"
    );
    let e = err(&GOOD.replace("\"100.64.0.0/10\"", "\"100.64.0.1/10\""));
    assert!(e.contains("host bits"), "{e}");
    let e = err(&format!("{GOOD}[timeouts]\nudp = \"5 minutes\"\n"));
    assert!(e.contains("timeouts.udp"), "{e}");
    let e = err(&GOOD.replace("external = \"eth0\"", "external = \"eth0\"\nbogus = 1"));
    assert!(e.contains("bogus"), "{e}");
    let e = err(&GOOD.replace("internal = \"eth1\"\n", ""));
    assert!(e.contains("internal"), "{e}");
    let e = err(&GOOD.replace("[\"203.0.113.0/28\", \"192.0.2.200/29\"]", "[]"));
    assert!(e.contains("at least one"), "{e}");
    let e = err(&GOOD.replace("192.0.2.200/29", "203.0.113.8/29"));
    assert!(e.contains("overlap"), "{e}");
    let e = err(&GOOD.replace("\"eth0\"", "\"an-interface-name-too-long\""));
    assert!(e.contains("interfaces.external"), "{e}");
}

#[test]
fn filtering_and_port_timeouts() {
    let c = parse(&format!(
        "{GOOD}[filtering]\nudp = \"address-dependent\"\ntcp = \"address-and-port-dependent\"\n\
         [timeouts]\ntcp_transitory = \"1m\"\ntcp_closing = \"30s\"\n[timeouts.udp_ports]\n53 = \"20s\"\n"
    ))
    .unwrap();
    assert_eq!(c.filtering.udp, Filtering::AddressDependent);
    assert_eq!(c.filtering.tcp, Filtering::AddressAndPortDependent);
    assert_eq!(c.filtering.icmp, Filtering::EndpointIndependent);
    assert!(c.filtering.any_address_dependent());
    assert_eq!(c.timeouts.tcp_opening, Duration::from_secs(60));
    assert_eq!(c.timeouts.tcp_closing, Duration::from_secs(30));
    assert_eq!(
        c.timeouts.udp_ports.get(&53),
        Some(&Duration::from_secs(20))
    );
    let e = err(&format!("{GOOD}[filtering]\nudp = \"symmetric\"\n"));
    assert!(
        e.contains("udp = \"symmetric\"") && e.contains("endpoint-independent"),
        "{e}"
    );
    let e = err(&format!("{GOOD}[timeouts.udp_ports]\ndns = \"20s\"\n"));
    assert!(e.contains("timeouts.udp_ports"), "{e}");
}

#[test]
fn pools_limits_statics_exemptions() {
    let c = parse(&format!(
        "{GOOD}[pool]\nmode = \"port-block\"\nblock_size = 128\nmax_blocks = 2\n\
         [limits]\nports = 100\nsessions = 1000\nnew_mappings_per_second = 50\n\
         [[static]]\nproto = \"tcp\"\ninternal = \"100.64.0.11:22\"\nexternal = \"203.0.113.1:2222\"\n"
    ))
    .unwrap();
    assert_eq!(c.mode, PoolMode::PortBlock);
    assert_eq!(c.blocks.block_size, 128);
    assert_eq!(c.limits.ports, 100);
    assert_eq!(c.statics.len(), 1);
    assert_eq!(c.statics[0].proto, 6);
    let c = parse(&GOOD.replace(
        "[nat]\n",
        "[nat]\nexempt = [\"198.51.100.50/32\", \"192.0.2.0/24:53\"]\n",
    ))
    .unwrap();
    assert_eq!(c.exempt.len(), 2);
    assert_eq!(c.exempt[1].port, Some(53));
    let e = err(&format!(
        "{GOOD}[[static]]\nproto = \"tcp\"\ninternal = \"100.64.0.11:22\"\nexternal = \"198.51.100.1:22\"\n"
    ));
    assert!(
        e.contains("static.external") && e.contains("external_pool"),
        "{e}"
    );
    let e = err(&format!(
        "{GOOD}[[static]]\nproto = \"sctp\"\ninternal = \"100.64.0.11:22\"\nexternal = \"203.0.113.1:22\"\n"
    ));
    assert!(e.contains("static.proto"), "{e}");
    let e = err(&format!("{GOOD}[pool]\nmode = \"deterministic\"\n"));
    assert!(e.contains("pool.mode") && e.contains("ports each"), "{e}");
    let e = err(&format!("{GOOD}[pool]\nmax_blocks = 0\n"));
    assert!(e.contains("max_blocks"), "{e}");
    let c = parse(&GOOD.replace("100.64.0.0/10", "100.64.0.0/20")).unwrap();
    assert!(c.deterministic.is_none());
    let c = parse(&format!(
        "{}[pool]\nmode = \"deterministic\"\n",
        GOOD.replace("100.64.0.0/10", "100.64.0.0/20")
    ))
    .unwrap();
    let d = c.deterministic.unwrap();
    assert_eq!(d.hosts_per_addr, 4096 / 24 + 1);
}

#[test]
fn one_armed_and_generic() {
    let c = parse(&GOOD.replace("\"eth1\"", "\"eth0\"").replace(
        "external = \"eth0\"",
        "external = \"eth0\"\nxdp_mode = \"generic\"",
    ))
    .unwrap();
    assert!(c.one_armed());
    assert_eq!(c.xdp_mode, XdpMode::Generic);
}

#[test]
fn shipped_configs_parse() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/cgnat.toml");
    Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn ipfix_output_needs_a_collector_address() {
    let c = parse(&format!(
        "{GOOD}[log]\noutput = \"ipfix\"\ncollector = \"192.0.2.10\"\n"
    ))
    .unwrap();
    assert_eq!(
        c.log,
        LogOutput::Ipfix {
            collector: "192.0.2.10:4739".parse().unwrap(),
            observation_domain: 1,
        }
    );
    let c = parse(&format!(
        "{GOOD}[log]\noutput = \"ipfix\"\ncollector = \"[2001:db8::1]:9995\"\nobservation_domain = 7\n"
    ))
    .unwrap();
    assert_eq!(
        c.log,
        LogOutput::Ipfix {
            collector: "[2001:db8::1]:9995".parse().unwrap(),
            observation_domain: 7,
        }
    );
    for bad in [
        "",
        "collector.example:4739",
        "192.0.2.10:0",
        "192.0.2.10:99999",
    ] {
        let e = err(&format!(
            "{GOOD}[log]\noutput = \"ipfix\"\ncollector = \"{bad}\"\n"
        ));
        assert!(e.contains("log.collector"), "{bad}: {e}");
    }
    let e = err(&format!("{GOOD}[log]\noutput = \"ipfix\"\n"));
    assert!(e.contains("log.collector") && e.contains("ip:port"), "{e}");
    let e = err(&format!(
        "{GOOD}[log]\noutput = \"ipfix\"\ncollector = \"192.0.2.10\"\nobservation_domain = -1\n"
    ));
    assert!(e.contains("observation_domain"), "{e}");
}
