//! SQL functions the analytics tables need and DataFusion does not have.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, StringBuilder};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::cast::as_string_array;
use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Volatility, create_udf};

/// `subnet(client_ip)`: the subnet entity of an address exactly as the engine
/// names it (`a.b.c.0/24`, or an IPv6 address's `/64`), so that decisions on
/// a subnet join its requests; NULL for text that is not an address. One
/// definition ([`crate::features::entity::subnet_of`]) instead of a regular
/// expression that would have to agree with it, and cannot for IPv6's
/// compressed forms.
pub fn subnet() -> ScalarUDF {
    address_udf("subnet", crate::features::entity::subnet_of)
}

/// `network(client_ip)`: the network entity of an address as the engine
/// names it (an IPv6 address's `/48`; NULL for IPv4, which has none).
pub fn network() -> ScalarUDF {
    address_udf("network", crate::features::entity::network_of)
}

/// `network56(client_ip)`: the address's other network entity, its `/56`
/// (what an ISP delegates to one household; NULL for IPv4).
pub fn network56() -> ScalarUDF {
    address_udf("network56", crate::features::entity::network56_of)
}

fn address_udf<T: Into<Option<String>> + 'static>(name: &str, of: fn(std::net::IpAddr) -> T) -> ScalarUDF {
    create_udf(
        name,
        vec![DataType::Utf8],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(move |args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let ips = as_string_array(&arrays[0])?;
            let mut out = StringBuilder::with_capacity(ips.len(), ips.len() * 16);
            for ip in ips.iter() {
                out.append_option(ip.and_then(|s| s.parse::<std::net::IpAddr>().ok()).and_then(|ip| of(ip).into()));
            }
            let out: ArrayRef = Arc::new(out.finish());
            Ok(ColumnarValue::Array(out))
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;

    #[tokio::test]
    async fn subnet_names_subnets_as_the_engine_does() {
        let ctx = SessionContext::new();
        ctx.register_udf(subnet());
        ctx.register_udf(network());
        ctx.register_udf(network56());
        let batches = ctx
            .sql(
                "SELECT subnet(x) AS s, network(x) AS n, network56(x) AS m FROM (VALUES ('203.0.113.9'), ('2001:db8:1:2:3:4:5:6'), ('fe80::1'), \
                 ('not an address'), (NULL)) AS t(x)",
            )
            .await
            .expect("plan")
            .collect()
            .await
            .expect("run");
        let col = as_string_array(batches[0].column(0)).expect("text");
        let got: Vec<Option<&str>> = col.iter().collect();
        assert_eq!(got, [Some("203.0.113.0/24"), Some("2001:db8:1:2::/64"), Some("fe80::/64"), None, None]);
        let col = as_string_array(batches[0].column(1)).expect("text");
        let got: Vec<Option<&str>> = col.iter().collect();
        assert_eq!(got, [None, Some("2001:db8:1::/48"), Some("fe80::/48"), None, None]);
        let col = as_string_array(batches[0].column(2)).expect("text");
        let got: Vec<Option<&str>> = col.iter().collect();
        assert_eq!(got, [None, Some("2001:db8:1::/56"), Some("fe80::/56"), None, None]);
    }
}
