//! A small PRNG for fault decisions (xorshift64*): fast, seeded from the system CSPRNG. Not for
//! anything secret.

pub struct Rng(u64);

impl Rng {
    pub fn seeded() -> Self {
        let mut b = [0u8; 8];
        aws_lc_rs::rand::fill(&mut b).expect("system randomness");
        Rng(u64::from_le_bytes(b) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}
