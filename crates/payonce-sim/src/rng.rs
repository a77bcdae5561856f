//! The simulator's randomness — fault draws, delays, ids, nonces — from one seed, so
//! `payonce sim --seed N` replays a run. Each purpose (prepay errors, notification drops, …) draws
//! from its own stream, derived from the seed and the purpose: turning one fault on, or a
//! scenario asking one more query, never shifts the draws of another. Not for anything secret
//! (keys come from the system's CSPRNG).

/// What a random draw decides. Each has its own stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Draw {
    PrepayError,
    PrepayTimeout,
    QueryError,
    CloseError,
    RefundError,
    RefundDrop,
    RefundTimeout,
    RefundDelay,
    NotifyDrop,
    NotifyDelay,
    /// Ids and nonces in answers.
    Nonce,
}

/// One xorshift64* stream.
pub struct Rng(u64);

/// A seed from the system's randomness, for runs that did not ask for one.
pub fn fresh_seed() -> u64 {
    let mut b = [0u8; 8];
    aws_lc_rs::rand::fill(&mut b).expect("system randomness");
    u64::from_le_bytes(b) >> 1
}

impl Rng {
    pub fn from_seed(seed: u64) -> Self {
        // splitmix64 of the seed: small seeds (1, 2, 3…) still start far apart.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
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

/// Every purpose's stream, made on first use from `hash(seed, purpose)`.
pub struct Streams {
    seed: u64,
    streams: std::collections::HashMap<Draw, Rng>,
}

impl Streams {
    pub fn new(seed: u64) -> Self {
        Streams {
            seed,
            streams: Default::default(),
        }
    }

    pub fn stream(&mut self, purpose: Draw) -> &mut Rng {
        let seed = self.seed;
        // The purpose's index, spread by a large odd constant, keeps the derived seeds apart.
        self.streams.entry(purpose).or_insert_with(|| {
            Rng::from_seed(seed ^ (purpose as u64 + 1).wrapping_mul(0xA24B_AED4_963E_E407))
        })
    }
}
