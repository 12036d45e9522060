//! Numbers for people, shared by the text report, the table and the chart, so that a
//! value reads the same wherever it appears.

/// 1234567.0 → "1.23M", 45100.0 → "45.1k", 812.0 → "812".
pub fn count(n: f64) -> String {
    match n {
        n if n >= 1e6 => format!("{:.2}M", n / 1e6),
        n if n >= 1e4 => format!("{:.1}k", n / 1e3),
        n if n >= 1e3 => format!("{:.2}k", n / 1e3),
        n => format!("{n:.0}"),
    }
}

/// Microseconds for people: "38 µs", "1.25 ms", "2.10 s".
pub fn micros(us: f64) -> String {
    match us {
        us if us >= 1e6 => format!("{:.2} s", us / 1e6),
        us if us >= 1e3 => format!("{:.2} ms", us / 1e3),
        us if us >= 100.0 => format!("{us:.0} µs"),
        us => format!("{us:.1} µs"),
    }
}

/// Bytes for people: "64 B", "4 KiB", "1.5 MiB".
pub fn bytes(n: f64) -> String {
    let units = [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (unit, size) in units {
        let size = size as f64;
        if n >= size {
            let v = n / size;
            return if v.fract() == 0.0 { format!("{v:.0} {unit}") } else { format!("{v:.1} {unit}") };
        }
    }
    format!("{n:.0} B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_for_people() {
        assert_eq!(count(1_234_567.0), "1.23M");
        assert_eq!(count(45_100.0), "45.1k");
        assert_eq!(count(1_500.0), "1.50k");
        assert_eq!(count(812.0), "812");
        assert_eq!(micros(38.24), "38.2 µs");
        assert_eq!(micros(250.0), "250 µs");
        assert_eq!(micros(1250.0), "1.25 ms");
        assert_eq!(bytes(64.0), "64 B");
        assert_eq!(bytes(4096.0), "4 KiB");
        assert_eq!(bytes(1.5 * 1048576.0), "1.5 MiB");
    }
}
