//! A compressed run of `(sequence, value)` points: delta-of-delta sequence numbers and
//! XOR-ed float bits, as Prometheus' head chunks and Facebook's Gorilla encode
//! (timestamp, value) pairs.
//!
//! The store keeps one timestamp column per source (every series of a sample shares its
//! time), so a point here carries the sample's sequence number rather than its time: a
//! series produced every sample costs one bit for its position, and a value that did
//! not change one more bit.
//!
//! # Guarantees
//! - Exact: any `f64` bit pattern (NaN payloads, ±Inf, -0.0, subnormals) comes back
//!   bit for bit; any strictly increasing sequence of `u64` positions comes back as is.
//! - A point whose sequence number is not greater than the last one is refused with
//!   [`Unordered`] and the chunk is left unchanged (no reordering, no duplicates).
//! - Appending is amortized O(1); reading is a forward scan from the start.
//!
//! Not here: time, quality, retention (the store's), or random access.

/// The refused point of [`Chunk::push`]: its sequence number is not after the last one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("point {seq} is not after the chunk's last point {last}")]
pub struct Unordered {
    pub seq: u64,
    pub last: u64,
}

/// Compressed points, oldest first.
#[derive(Debug, Clone)]
pub struct Chunk {
    bits: BitWriter,
    count: u32,
    first_seq: u64,
    last_seq: u64,
    last_delta: u64,
    last_value: u64,
    /// Leading and trailing zero bits of the last XOR window (leading = 0xff: none yet).
    leading: u8,
    trailing: u8,
}

impl Chunk {
    /// A chunk holding one point.
    pub fn new(seq: u64, value: f64) -> Self {
        let mut bits = BitWriter::default();
        bits.write(seq, 64);
        bits.write(value.to_bits(), 64);
        Chunk { bits, count: 1, first_seq: seq, last_seq: seq, last_delta: 0, last_value: value.to_bits(), leading: 0xff, trailing: 0 }
    }

    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn first_seq(&self) -> u64 {
        self.first_seq
    }

    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Heap bytes held (the encoded stream's capacity).
    pub fn heap_bytes(&self) -> usize {
        self.bits.bytes.capacity()
    }

    /// Gives back the slack the growing stream reserved.
    pub fn shrink_to_fit(&mut self) {
        self.bits.bytes.shrink_to_fit();
    }

    /// Appends a point after the last one.
    pub fn push(&mut self, seq: u64, value: f64) -> Result<(), Unordered> {
        if seq <= self.last_seq || self.count == u32::MAX {
            return Err(Unordered { seq, last: self.last_seq });
        }
        let delta = seq - self.last_seq;
        // Two's-complement difference: exact for any pair of u64 deltas.
        let dod = delta.wrapping_sub(self.last_delta) as i64;
        let b = &mut self.bits;
        match dod {
            0 => b.write(0, 1),
            -64..=63 => {
                b.write(0b10, 2);
                b.write(dod as u64, 7);
            }
            -4096..=4095 => {
                b.write(0b110, 3);
                b.write(dod as u64, 13);
            }
            -524_288..=524_287 => {
                b.write(0b1110, 4);
                b.write(dod as u64, 20);
            }
            _ => {
                b.write(0b1111, 4);
                b.write(dod as u64, 64);
            }
        }
        let v = value.to_bits();
        let xor = v ^ self.last_value;
        if xor == 0 {
            b.write(0, 1);
        } else {
            let leading = (xor.leading_zeros() as u8).min(31);
            let trailing = xor.trailing_zeros() as u8;
            if self.leading != 0xff && leading >= self.leading && trailing >= self.trailing {
                let significant = 64 - self.leading - self.trailing;
                b.write(0b10, 2);
                b.write(xor >> self.trailing, significant);
            } else {
                let significant = 64 - leading - trailing;
                b.write(0b11, 2);
                b.write(u64::from(leading), 5);
                // 64 significant bits are written as 0 (6 bits hold 0..=63).
                b.write(u64::from(significant & 63), 6);
                b.write(xor >> trailing, significant);
                self.leading = leading;
                self.trailing = trailing;
            }
        }
        self.count += 1;
        self.last_seq = seq;
        self.last_delta = delta;
        self.last_value = v;
        Ok(())
    }

    /// Every point, oldest first.
    pub fn iter(&self) -> Iter<'_> {
        Iter { r: BitReader { bytes: &self.bits.bytes, pos: 0 }, left: self.count, seq: 0, delta: 0, value: 0, leading: 0, trailing: 0 }
    }
}

/// Points of a [`Chunk`], oldest first.
#[derive(Debug, Clone)]
pub struct Iter<'a> {
    r: BitReader<'a>,
    left: u32,
    seq: u64,
    delta: u64,
    value: u64,
    leading: u8,
    trailing: u8,
}

impl Iterator for Iter<'_> {
    type Item = (u64, f64);

    fn next(&mut self) -> Option<(u64, f64)> {
        if self.left == 0 {
            return None;
        }
        let first = self.r.pos == 0;
        self.left -= 1;
        if first {
            self.seq = self.r.read(64);
            self.value = self.r.read(64);
            return Some((self.seq, f64::from_bits(self.value)));
        }
        let dod = if self.r.read(1) == 0 {
            0
        } else if self.r.read(1) == 0 {
            signed(self.r.read(7), 7)
        } else if self.r.read(1) == 0 {
            signed(self.r.read(13), 13)
        } else if self.r.read(1) == 0 {
            signed(self.r.read(20), 20)
        } else {
            self.r.read(64)
        };
        self.delta = self.delta.wrapping_add(dod);
        self.seq = self.seq.wrapping_add(self.delta);
        if self.r.read(1) == 1 {
            if self.r.read(1) == 1 {
                self.leading = self.r.read(5) as u8;
                let significant = match self.r.read(6) as u8 {
                    0 => 64,
                    n => n,
                };
                self.trailing = 64u8.saturating_sub(self.leading).saturating_sub(significant);
            }
            let significant = 64u8.saturating_sub(self.leading).saturating_sub(self.trailing);
            self.value ^= self.r.read(significant).checked_shl(u32::from(self.trailing)).unwrap_or(0);
        }
        Some((self.seq, f64::from_bits(self.value)))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left as usize, Some(self.left as usize))
    }
}

/// Sign-extends the low `n` bits of `v` (two's complement) to a u64 holding an i64.
fn signed(v: u64, n: u8) -> u64 {
    let shift = 64 - u32::from(n);
    (((v << shift) as i64) >> shift) as u64
}

/// Bits appended most significant first.
#[derive(Debug, Clone, Default)]
struct BitWriter {
    bytes: Vec<u8>,
    /// Free bits in the last byte (0..=7; 0 when the last byte is full or there is none).
    free: u8,
}

impl BitWriter {
    /// Writes the low `n` bits of `v` (n ≤ 64).
    fn write(&mut self, v: u64, n: u8) {
        let mut n = n;
        while n > 0 {
            if self.free == 0 {
                if self.bytes.len() == self.bytes.capacity() {
                    // Grow by a quarter (at least 8 bytes), not double: a chunk lives long
                    // and most of them stay small.
                    self.bytes.reserve_exact((self.bytes.len() / 4).max(8));
                }
                self.bytes.push(0);
                self.free = 8;
            }
            let take = n.min(self.free);
            let bits = ((v >> (n - take)) & ((1u64 << take) - 1)) as u8;
            let last = self.bytes.len() - 1;
            self.bytes[last] |= bits << (self.free - take);
            self.free -= take;
            n -= take;
        }
    }
}

#[derive(Debug, Clone)]
struct BitReader<'a> {
    bytes: &'a [u8],
    /// Position in bits.
    pos: usize,
}

impl BitReader<'_> {
    /// Reads `n` bits (n ≤ 64); past the end reads zeros (never happens on a chunk's
    /// own stream: the count bounds the reads).
    fn read(&mut self, n: u8) -> u64 {
        let mut out = 0u64;
        let mut n = n;
        while n > 0 {
            let byte = self.bytes.get(self.pos / 8).copied().unwrap_or(0);
            let offset = (self.pos % 8) as u8;
            let avail = 8 - offset;
            let take = n.min(avail);
            let bits = (byte >> (avail - take)) & (((1u16 << take) - 1) as u8);
            out = (out << take) | u64::from(bits);
            self.pos += usize::from(take);
            n -= take;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode(points: &[(u64, f64)]) -> Chunk {
        let mut c = Chunk::new(points[0].0, points[0].1);
        for &(s, v) in &points[1..] {
            c.push(s, v).unwrap();
        }
        c
    }

    fn bits(points: impl Iterator<Item = (u64, f64)>) -> Vec<(u64, u64)> {
        points.map(|(s, v)| (s, v.to_bits())).collect()
    }

    #[test]
    fn special_floats_come_back_bit_for_bit() {
        let nan_payload = f64::from_bits(0x7ff8_dead_beef_0001);
        let values = [0.0, -0.0, f64::NAN, nan_payload, f64::INFINITY, f64::NEG_INFINITY, f64::MIN_POSITIVE / 2.0, f64::MAX, f64::MIN, 1.0, 1.0, -0.0];
        let points: Vec<_> = values.iter().enumerate().map(|(i, v)| (i as u64 * 3 + 7, *v)).collect();
        let c = encode(&points);
        assert_eq!(bits(c.iter()), bits(points.into_iter()));
    }

    #[test]
    fn a_point_not_after_the_last_is_refused_and_changes_nothing() {
        let mut c = encode(&[(10, 1.0), (11, 2.0)]);
        let before = bits(c.iter());
        assert_eq!(c.push(11, 5.0), Err(Unordered { seq: 11, last: 11 }), "a duplicate");
        assert_eq!(c.push(3, 5.0), Err(Unordered { seq: 3, last: 11 }), "out of order");
        assert_eq!(bits(c.iter()), before);
        c.push(12, 3.0).unwrap();
        assert_eq!(c.len(), 3);
    }

    #[test]
    fn a_regular_constant_series_costs_about_two_bits_a_point() {
        let mut c = Chunk::new(0, 42.0);
        for s in 1..1000 {
            c.push(s, 42.0).unwrap();
        }
        // 16 bytes for the first point, then ≤ 2 bits (and the first delta's 9) each.
        assert!(c.bits.bytes.len() <= 16 + 2 + 1000 / 4, "{} bytes", c.bits.bytes.len());
    }

    fn points() -> impl Strategy<Value = Vec<(u64, f64)>> {
        let delta = prop_oneof![Just(1u64), 1u64..5, 1u64..100_000, 1u64..=u64::MAX / 4];
        let value = prop_oneof![
            any::<u64>().prop_map(f64::from_bits),
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(-0.0),
            Just(0.0),
            (0u64..1_000_000).prop_map(|v| v as f64),
            any::<f64>(),
        ];
        (any::<u64>(), prop::collection::vec((delta, value), 1..300)).prop_map(|(start, steps)| {
            let mut seq = start % (u64::MAX / 2);
            let mut out = Vec::with_capacity(steps.len());
            for (d, v) in steps {
                out.push((seq, v));
                seq = seq.saturating_add(d);
                if seq == u64::MAX {
                    break;
                }
            }
            out
        })
    }

    proptest! {
        #[test]
        fn any_increasing_points_round_trip_exactly(points in points()) {
            let c = encode(&points);
            prop_assert_eq!(c.len(), points.len());
            prop_assert_eq!(c.first_seq(), points[0].0);
            prop_assert_eq!(c.last_seq(), points[points.len() - 1].0);
            prop_assert_eq!(bits(c.iter()), bits(points.into_iter()));
        }

        #[test]
        fn unordered_points_are_refused_wherever_they_come(points in points(), back in any::<u64>(), v in any::<f64>()) {
            let mut c = encode(&points);
            let last = c.last_seq();
            let seq = if last == 0 { 0 } else { back % (last + 1) };
            prop_assert_eq!(c.push(seq, v), Err(Unordered { seq, last }));
            prop_assert_eq!(bits(c.iter()), bits(points.into_iter()));
        }
    }
}
