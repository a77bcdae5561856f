//! `application/x-www-form-urlencoded` (UTF-8), as ordered pairs: the body format of Alipay's
//! gateway and notifications and of every UnionPay message.

pub fn parse(body: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(body).into_owned().collect()
}

pub fn encode(params: &[(String, String)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params.iter())
        .finish()
}
