//! Writes values in the byte format `arbitrary` reads them from, so that the
//! seed generator can build scripts for the structured targets (`session`,
//! `signal`) that decode to the intended steps (checked when it runs).

/// Bytes being written.
#[derive(Default)]
pub(crate) struct Enc(pub(crate) Vec<u8>);

/// A value `arbitrary` can read back.
pub(crate) trait Encode {
    fn encode(&self, e: &mut Enc);
}

impl Enc {
    /// The `i`-th of `n` variants of an enum (derive(Arbitrary) reads a
    /// `u32` and scales it to the number of variants).
    pub(crate) fn variant(&mut self, i: u32, n: u32) {
        let x = (u64::from(i) << 32).div_ceil(u64::from(n));
        self.0.extend_from_slice(&(x as u32).to_le_bytes());
    }

    pub(crate) fn put<T: Encode + ?Sized>(&mut self, v: &T) -> &mut Self {
        v.encode(self);
        self
    }
}

macro_rules! ints {
    ($($t:ty),*) => {$(
        impl Encode for $t {
            fn encode(&self, e: &mut Enc) {
                e.0.extend_from_slice(&self.to_le_bytes());
            }
        }
    )*};
}
ints!(u8, u16, u32, u64, i16);

impl Encode for bool {
    fn encode(&self, e: &mut Enc) {
        e.0.push(u8::from(*self));
    }
}

impl<const N: usize> Encode for [u8; N] {
    fn encode(&self, e: &mut Enc) {
        e.0.extend_from_slice(self);
    }
}

/// A `Vec` is read element by element, each after a "one more" flag.
impl<T: Encode> Encode for Vec<T> {
    fn encode(&self, e: &mut Enc) {
        for x in self {
            e.0.push(1);
            x.encode(e);
        }
        e.0.push(0);
    }
}
