//! Just enough DER reading to get the subject CN and SAN entries of a certificate that
//! webpki has already parsed and chain-verified (webpki does not expose them).

const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
const OID_SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];

#[derive(Default)]
pub(super) struct CertNames<'a> {
    pub common_name: Option<&'a [u8]>,
    pub dns: Vec<&'a [u8]>,
    pub ips: Vec<&'a [u8]>,
}

/// Splits one TLV off the front: (tag, content, rest).
fn next(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&len0, rest) = rest.split_first()?;
    let (len, rest) = if len0 < 0x80 {
        (usize::from(len0), rest)
    } else {
        let n = usize::from(len0 & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// Iterates over the TLVs of a constructed value's content.
fn items(mut input: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        let (tag, content, rest) = next(input)?;
        input = rest;
        Some((tag, content))
    })
}

pub(super) fn cert_names(cert: &[u8]) -> Option<CertNames<'_>> {
    let (_, cert, _) = next(cert)?;
    let (_, mut tbs, _) = next(cert)?;
    // Optional [0] version, then serial, signature, issuer, validity.
    if tbs.first() == Some(&0xa0) {
        tbs = next(tbs)?.2;
    }
    for _ in 0..4 {
        tbs = next(tbs)?.2;
    }
    let (_, subject, rest) = next(tbs)?;
    let rest = next(rest)?.2; // subjectPublicKeyInfo
    let mut names = CertNames {
        // OpenSSL's X509_NAME_get_index_by_NID(.., -1) picks the first CN.
        common_name: items(subject)
            .flat_map(|(_, rdn)| items(rdn))
            .find_map(|(_, atv)| {
                let mut it = items(atv);
                let (_, oid) = it.next()?;
                let (_, value) = it.next()?;
                (oid == OID_COMMON_NAME).then_some(value)
            }),
        ..CertNames::default()
    };
    let Some((_, exts)) = items(rest).find(|&(tag, _)| tag == 0xa3) else {
        return Some(names);
    };
    let (_, exts, _) = next(exts)?;
    for (_, ext) in items(exts) {
        let mut fields = items(ext);
        if fields.next() != Some((0x06, OID_SUBJECT_ALT_NAME)) {
            continue;
        }
        // Skip the optional `critical` BOOLEAN; the value is the OCTET STRING.
        let Some((_, value)) = fields.find(|&(tag, _)| tag == 0x04) else {
            continue;
        };
        let (_, general_names, _) = next(value)?;
        for (tag, name) in items(general_names) {
            match tag {
                0x82 => names.dns.push(name), // [2] dNSName
                0x87 => names.ips.push(name), // [7] iPAddress
                _ => {}
            }
        }
    }
    Some(names)
}
