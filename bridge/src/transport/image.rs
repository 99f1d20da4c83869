//! Images without copies on the way: a publisher that lends the buffer the
//! pixels are written into ([`PublishImage::loan`]), and a received image that
//! borrows the bytes it arrived in ([`SharedImage`]).
//!
//! On native zenoh with shared memory the loan is a buffer of the session's
//! shared-memory pool with the CDR fields of `sensor_msgs/Image` already in
//! place: the producer writes its pixels straight into the memory a subscriber
//! on the same host maps, and that subscriber reads them where they lie
//! ([`SharedImage::view`]). Other transports fall back to an owned [`Image`]
//! (one copy each way, as with [`super::Publish`]).
//!
//! [`ImageView::parse`] reads the CDR of `sensor_msgs/Image` (either byte
//! order) without copying; it agrees with [`crate::msg::decode`] and never
//! panics on malformed bytes.

use std::ops::Range;

use zenoh::bytes::ZBytes;
use zenoh::shm::ZShmMut;

use super::{Publish, Received, Sink, TransportError};
use crate::msg::{
    Image, MsgError, Time, CDR_BE, CDR_LE, ENCAPSULATION_HEADER, MAX_TRAILING_PADDING,
};

/// The shape of an image to loan: `step` bytes per row, `height` rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageLayout {
    pub width: u32,
    pub height: u32,
    pub encoding: String,
    pub step: u32,
}

impl ImageLayout {
    /// Rows of `width * channels` bytes, no padding.
    pub fn packed(
        encoding: &str,
        channels: u32,
        width: u32,
        height: u32,
    ) -> Result<Self, MsgError> {
        let step = width.checked_mul(channels).ok_or_else(|| {
            MsgError::Invalid(format!("{encoding} image {width} wide: step overflows u32"))
        })?;
        Ok(ImageLayout {
            width,
            height,
            encoding: encoding.to_string(),
            step,
        })
    }

    /// Bytes of pixel data.
    pub fn data_len(&self) -> usize {
        self.step as usize * self.height as usize
    }
}

/// A `sensor_msgs/Image` borrowed from its CDR bytes (or from an [`Image`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageView<'a> {
    pub stamp: Time,
    pub frame_id: &'a str,
    pub height: u32,
    pub width: u32,
    pub encoding: &'a str,
    pub is_bigendian: u8,
    pub step: u32,
    pub data: &'a [u8],
}

impl<'a> ImageView<'a> {
    /// Reads CDR bytes (4-byte encapsulation header, then the body), like
    /// [`crate::msg::decode::<Image>`] but without copying anything.
    pub fn parse(cdr: &'a [u8]) -> Result<ImageView<'a>, MsgError> {
        let idx = ImageIndex::parse(cdr)?;
        Ok(idx.view(cdr))
    }

    /// The view of an owned message.
    pub fn of(img: &'a Image) -> ImageView<'a> {
        ImageView {
            stamp: img.header.stamp,
            frame_id: &img.header.frame_id,
            height: img.height,
            width: img.width,
            encoding: &img.encoding,
            is_bigendian: img.is_bigendian,
            step: img.step,
            data: &img.data,
        }
    }

    /// An owned copy.
    pub fn to_image(&self) -> Image {
        Image {
            header: crate::msg::Header::new(self.stamp, self.frame_id),
            height: self.height,
            width: self.width,
            encoding: self.encoding.to_string(),
            is_bigendian: self.is_bigendian,
            step: self.step,
            data: self.data.to_vec(),
        }
    }
}

/// Where the fields of one `sensor_msgs/Image` lie in its CDR bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ImageIndex {
    stamp: Time,
    frame_id: Range<usize>,
    height: u32,
    width: u32,
    encoding: Range<usize>,
    is_bigendian: u8,
    step: u32,
    data: Range<usize>,
}

/// Byte offset of the stamp (right after the encapsulation header).
const STAMP_AT: usize = 4;

impl ImageIndex {
    fn parse(cdr: &[u8]) -> Result<ImageIndex, MsgError> {
        if cdr.len() < 4 {
            return Err(MsgError::TooShort { len: cdr.len() });
        }
        let little = match [cdr[0], cdr[1]] {
            CDR_LE => true,
            CDR_BE => false,
            other => return Err(MsgError::BadEncapsulation(other)),
        };
        let mut r = Reader {
            cdr,
            pos: 4,
            little,
        };
        let sec = r.u32()? as i32;
        let nanosec = r.u32()?;
        let frame_id = r.string("header.frame_id")?;
        let height = r.u32()?;
        let width = r.u32()?;
        let encoding = r.string("encoding")?;
        let is_bigendian = r.u8()?;
        let step = r.u32()?;
        let n = r.u32()? as usize;
        let data = r.take(n, "data")?;
        let trailing = cdr.len() - r.pos;
        if trailing > MAX_TRAILING_PADDING {
            return Err(MsgError::TrailingBytes {
                trailing,
                consumed: r.pos - 4,
            });
        }
        Ok(ImageIndex {
            stamp: Time { sec, nanosec },
            frame_id,
            height,
            width,
            encoding,
            is_bigendian,
            step,
            data,
        })
    }

    /// The view of `cdr`, the bytes this index was parsed from (or written
    /// into); ranges that do not fit read as empty rather than panic.
    fn view<'a>(&self, cdr: &'a [u8]) -> ImageView<'a> {
        let text = |r: &Range<usize>| {
            cdr.get(r.clone())
                .and_then(|b| std::str::from_utf8(b).ok())
                .unwrap_or("")
        };
        ImageView {
            stamp: self.stamp,
            frame_id: text(&self.frame_id),
            height: self.height,
            width: self.width,
            encoding: text(&self.encoding),
            is_bigendian: self.is_bigendian,
            step: self.step,
            data: cdr.get(self.data.clone()).unwrap_or(&[]),
        }
    }

    /// Total CDR size of an image of `layout` from frame `frame_id`.
    fn cdr_len(frame_id: &str, layout: &ImageLayout) -> usize {
        let mut p = 4 + 8; // header, stamp
        p += 4 + frame_id.len() + 1;
        p = align4(p) + 8; // height, width
        p += 4 + layout.encoding.len() + 1 + 1; // encoding, is_bigendian
        p = align4(p) + 4 + 4; // step, data length
        p + layout.data_len()
    }

    /// Writes every field but the pixels (and a zero stamp) into `out`, which
    /// is exactly [`ImageIndex::cdr_len`] bytes long; the layout `encode` writes.
    fn write(out: &mut [u8], frame_id: &str, layout: &ImageLayout) -> ImageIndex {
        let mut w = Writer { out, pos: 0 };
        w.bytes(&ENCAPSULATION_HEADER);
        w.u32(0);
        w.u32(0);
        let frame = w.string(frame_id);
        w.u32(layout.height);
        w.u32(layout.width);
        let encoding = w.string(&layout.encoding);
        w.bytes(&[0]);
        w.u32(layout.step);
        w.u32(layout.data_len() as u32);
        let data = w.pos..w.pos + layout.data_len();
        ImageIndex {
            stamp: Time::default(),
            frame_id: frame,
            height: layout.height,
            width: layout.width,
            encoding,
            is_bigendian: 0,
            step: layout.step,
            data,
        }
    }
}

fn align4(p: usize) -> usize {
    // CDR aligns relative to the body, which starts at offset 4.
    4 + (p - 4).div_ceil(4) * 4
}

/// A bounds-checked CDR reader (positions are absolute, alignment is relative
/// to the body at offset 4).
struct Reader<'a> {
    cdr: &'a [u8],
    pos: usize,
    little: bool,
}

impl Reader<'_> {
    fn take(&mut self, n: usize, what: &str) -> Result<Range<usize>, MsgError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.cdr.len());
        let Some(end) = end else {
            return Err(MsgError::Cdr(format!(
                "{what}: {n} bytes at offset {} run past the end ({} bytes)",
                self.pos,
                self.cdr.len()
            )));
        };
        let r = self.pos..end;
        self.pos = end;
        Ok(r)
    }

    fn u8(&mut self) -> Result<u8, MsgError> {
        let r = self.take(1, "octet")?;
        Ok(self.cdr[r.start])
    }

    fn u32(&mut self) -> Result<u32, MsgError> {
        self.pos = align4(self.pos);
        let r = self.take(4, "uint32")?;
        let b = [
            self.cdr[r.start],
            self.cdr[r.start + 1],
            self.cdr[r.start + 2],
            self.cdr[r.start + 3],
        ];
        Ok(if self.little {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    }

    /// A CDR string (length counting the NUL, bytes, NUL): the range without the NUL.
    fn string(&mut self, what: &str) -> Result<Range<usize>, MsgError> {
        let n = self.u32()? as usize;
        let r = self.take(n, what)?;
        if n == 0 {
            return Ok(r);
        }
        // The last byte is the terminating NUL; like cdr-encoding (and Fast
        // CDR) its value is not checked.
        let text = r.start..r.end - 1;
        if std::str::from_utf8(&self.cdr[text.clone()]).is_err() {
            return Err(MsgError::Cdr(format!("{what}: invalid UTF-8")));
        }
        Ok(text)
    }
}

/// Writes into a buffer sized by [`ImageIndex::cdr_len`] (little endian).
struct Writer<'a> {
    out: &'a mut [u8],
    pos: usize,
}

impl Writer<'_> {
    fn bytes(&mut self, b: &[u8]) {
        self.out[self.pos..self.pos + b.len()].copy_from_slice(b);
        self.pos += b.len();
    }

    fn u32(&mut self, v: u32) {
        let at = align4(self.pos);
        self.out[self.pos..at].fill(0);
        self.pos = at;
        self.bytes(&v.to_le_bytes());
    }

    fn string(&mut self, s: &str) -> Range<usize> {
        self.u32(s.len() as u32 + 1);
        let r = self.pos..self.pos + s.len();
        self.bytes(s.as_bytes());
        self.bytes(&[0]);
        r
    }
}

// ---------------------------------------------------------------------------
// Publishing from a loaned buffer
// ---------------------------------------------------------------------------

/// The buffer of one image about to be published: write the pixels into
/// [`ImageLoan::data_mut`], set the stamp, hand it to [`PublishImage::publish`].
pub struct ImageLoan {
    buf: LoanBuf,
}

enum LoanBuf {
    /// CDR bytes in the zenoh session's shared memory.
    Shm(ZShmMut, ImageIndex),
    /// CDR bytes on the heap (zenoh without shared memory).
    Heap(Vec<u8>, ImageIndex),
    /// A message for a transport that serialises itself (ROS 2).
    Msg(Image),
}

impl ImageLoan {
    /// A loan in a shared-memory buffer of exactly the CDR size.
    pub(crate) fn shm(mut buf: ZShmMut, frame_id: &str, layout: &ImageLayout) -> ImageLoan {
        let bytes: &mut [u8] = buf.as_mut();
        let idx = ImageIndex::write(bytes, frame_id, layout);
        ImageLoan {
            buf: LoanBuf::Shm(buf, idx),
        }
    }

    /// A loan of CDR bytes on the heap.
    pub(crate) fn heap(frame_id: &str, layout: &ImageLayout) -> ImageLoan {
        let mut v = vec![0u8; ImageLoan::cdr_len(frame_id, layout)];
        let idx = ImageIndex::write(&mut v, frame_id, layout);
        ImageLoan {
            buf: LoanBuf::Heap(v, idx),
        }
    }

    /// A loan of an owned message.
    pub fn message(frame_id: &str, layout: &ImageLayout) -> ImageLoan {
        ImageLoan {
            buf: LoanBuf::Msg(Image {
                header: crate::msg::Header::new(Time::default(), frame_id),
                height: layout.height,
                width: layout.width,
                encoding: layout.encoding.clone(),
                is_bigendian: 0,
                step: layout.step,
                data: vec![0; layout.data_len()],
            }),
        }
    }

    /// CDR size (encapsulation header included) of an image of `layout`.
    pub fn cdr_len(frame_id: &str, layout: &ImageLayout) -> usize {
        ImageIndex::cdr_len(frame_id, layout)
    }

    /// The pixel bytes (`step * height`), to be filled by the producer. A
    /// shared-memory loan holds whatever the pool's buffer held before.
    pub fn data_mut(&mut self) -> &mut [u8] {
        match &mut self.buf {
            LoanBuf::Shm(b, idx) => {
                let bytes: &mut [u8] = b.as_mut();
                bytes.get_mut(idx.data.clone()).unwrap_or_default()
            }
            LoanBuf::Heap(v, idx) => v.get_mut(idx.data.clone()).unwrap_or_default(),
            LoanBuf::Msg(m) => &mut m.data,
        }
    }

    /// Copies `pixels` (exactly `step * height` bytes) into the loan.
    pub fn fill(&mut self, pixels: &[u8]) -> Result<(), MsgError> {
        let data = self.data_mut();
        if data.len() != pixels.len() {
            return Err(MsgError::Invalid(format!(
                "image loan holds {} bytes of pixels, got {}",
                data.len(),
                pixels.len()
            )));
        }
        data.copy_from_slice(pixels);
        Ok(())
    }

    /// Sets `header.stamp`.
    pub fn set_stamp(&mut self, t: Time) {
        let put = |bytes: &mut [u8], idx: &mut ImageIndex| {
            if let Some(s) = bytes.get_mut(STAMP_AT..STAMP_AT + 8) {
                s[..4].copy_from_slice(&t.sec.to_le_bytes());
                s[4..].copy_from_slice(&t.nanosec.to_le_bytes());
            }
            idx.stamp = t;
        };
        match &mut self.buf {
            LoanBuf::Shm(b, idx) => put(b.as_mut(), idx),
            LoanBuf::Heap(v, idx) => put(v, idx),
            LoanBuf::Msg(m) => m.header.stamp = t,
        }
    }

    /// The image as it stands.
    pub fn view(&self) -> ImageView<'_> {
        match &self.buf {
            LoanBuf::Shm(b, idx) => idx.view(b.as_ref()),
            LoanBuf::Heap(v, idx) => idx.view(v),
            LoanBuf::Msg(m) => ImageView::of(m),
        }
    }

    /// Whether the pixels are written into shared memory.
    pub fn in_shared_memory(&self) -> bool {
        matches!(self.buf, LoanBuf::Shm(..))
    }

    /// The bytes to send: zenoh payload (shared memory or heap), or the message.
    pub(crate) fn into_payload(self) -> Result<ZBytes, Image> {
        match self.buf {
            LoanBuf::Shm(b, _) => Ok(ZBytes::from(b)),
            LoanBuf::Heap(v, _) => Ok(ZBytes::from(v)),
            LoanBuf::Msg(m) => Err(m),
        }
    }
}

/// Publishes images from loaned buffers ([`super::Transport::image_publisher`]).
pub trait PublishImage: Send + Sync {
    /// A buffer for one image of `layout`, its CDR fields written.
    fn loan(&self, frame_id: &str, layout: &ImageLayout) -> Result<ImageLoan, TransportError>;
    /// Publishes a loan of this publisher.
    fn publish(&self, loan: ImageLoan) -> Result<(), TransportError>;
    /// Loans a buffer, copies `pixels` (exactly `step * height` bytes) into it
    /// and publishes it with `header`'s frame and stamp.
    fn publish_pixels(
        &self,
        header: &crate::msg::Header,
        layout: &ImageLayout,
        pixels: &[u8],
    ) -> Result<(), TransportError> {
        let mut loan = self.loan(&header.frame_id, layout)?;
        loan.set_stamp(header.stamp);
        loan.fill(pixels).map_err(|e| TransportError::Publish {
            topic: self.wire_name().to_string(),
            message: e.to_string(),
        })?;
        self.publish(loan)
    }
    /// The name on the wire.
    fn wire_name(&self) -> &str;
}

/// [`PublishImage`] over an ordinary [`Publish<Image>`] (the ROS 2 transports).
pub(crate) struct MessageImages(pub(crate) Box<dyn Publish<Image>>);

impl PublishImage for MessageImages {
    fn loan(&self, frame_id: &str, layout: &ImageLayout) -> Result<ImageLoan, TransportError> {
        Ok(ImageLoan::message(frame_id, layout))
    }
    fn publish(&self, loan: ImageLoan) -> Result<(), TransportError> {
        match loan.buf {
            LoanBuf::Msg(m) => self.0.publish(&m),
            _ => self.0.publish(&loan.view().to_image()),
        }
    }
    fn wire_name(&self) -> &str {
        self.0.wire_name()
    }
}

// ---------------------------------------------------------------------------
// Receiving without a copy
// ---------------------------------------------------------------------------

/// A received image that keeps the bytes it arrived in: on zenoh with shared
/// memory, the mapped buffer the publisher wrote (held until this is dropped).
#[derive(Debug, Clone)]
pub struct SharedImage {
    inner: Shared,
}

#[derive(Debug, Clone)]
enum Shared {
    Cdr(ZBytes, ImageIndex),
    Owned(Image),
}

impl SharedImage {
    /// Parses a zenoh payload, keeping it (contiguous payloads, shared memory
    /// always, are not copied; fragmented ones are joined once).
    pub(crate) fn from_payload(payload: &ZBytes) -> Result<SharedImage, MsgError> {
        let bytes = match contiguous(payload) {
            Some(_) => payload.clone(),
            None => ZBytes::from(payload.to_bytes().into_owned()),
        };
        let idx = ImageIndex::parse(contiguous(&bytes).unwrap_or(&[]))?;
        Ok(SharedImage {
            inner: Shared::Cdr(bytes, idx),
        })
    }

    /// Wraps an owned message.
    pub fn owned(img: Image) -> SharedImage {
        SharedImage {
            inner: Shared::Owned(img),
        }
    }

    /// The image, borrowed.
    pub fn view(&self) -> ImageView<'_> {
        match &self.inner {
            Shared::Cdr(b, idx) => idx.view(contiguous(b).unwrap_or(&[])),
            Shared::Owned(m) => ImageView::of(m),
        }
    }

    /// Whether the bytes are a shared-memory buffer.
    pub fn in_shared_memory(&self) -> bool {
        match &self.inner {
            Shared::Cdr(b, _) => b.as_shm().is_some(),
            Shared::Owned(_) => false,
        }
    }
}

/// The payload as one slice, when it is one.
fn contiguous(z: &ZBytes) -> Option<&[u8]> {
    let mut s = z.slices();
    match (s.next(), s.next()) {
        (Some(one), None) => Some(one),
        (None, _) => Some(&[]),
        _ => None,
    }
}

/// A [`Sink<Image>`] feeding a [`Sink<SharedImage>`] (transports that decode
/// into owned messages).
pub(crate) fn owned_sink(mut sink: Sink<SharedImage>) -> Sink<Image> {
    Box::new(move |r| {
        sink(r.map(|x| Received {
            msg: SharedImage::owned(x.msg),
            recv: x.recv,
            recv_wall_ns: x.recv_wall_ns,
            source_ns: x.source_ns,
        }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::{decode, encode_vec, Header};

    fn image(frame: &str, w: u32, h: u32, encoding: &str, channels: u32) -> Image {
        let data = (0..w * h * channels).map(|i| (i * 7 % 256) as u8).collect();
        let mut m = Image::packed(
            Header::new(Time::from_nanos(1_700_000_000_123_456_789), frame),
            encoding,
            channels,
            w,
            h,
            data,
        )
        .expect("image");
        m.header.stamp = Time {
            sec: -3,
            nanosec: 999,
        };
        m
    }

    #[test]
    fn written_layout_is_byte_for_byte_what_encode_writes() {
        // Frame id and encoding lengths that put every alignment case in play.
        for frame in ["", "a", "ab", "abc", "head_camera_optical_frame"] {
            for (enc, ch) in [("rgb8", 3), ("mono8", 1), ("mono16", 2), ("32FC1", 4)] {
                let m = image(frame, 5, 3, enc, ch);
                let layout = ImageLayout::packed(enc, ch, 5, 3).expect("layout");
                let mut loan = ImageLoan::heap(frame, &layout);
                loan.data_mut().copy_from_slice(&m.data);
                loan.set_stamp(m.header.stamp);
                let want = encode_vec(&m).expect("encode");
                let Ok(got) = loan.into_payload() else {
                    panic!("heap loan")
                };
                assert_eq!(got.to_bytes().as_ref(), want.as_slice(), "{frame:?} {enc}");
                assert_eq!(ImageLoan::cdr_len(frame, &layout), want.len());
            }
        }
    }

    #[test]
    fn parse_agrees_with_decode_on_both_byte_orders() {
        let m = image("wrist", 4, 2, "bgr8", 3);
        let le = encode_vec(&m).expect("encode");
        let v = ImageView::parse(&le).expect("parse");
        assert_eq!(v.to_image(), m);
        assert_eq!(v, ImageView::of(&m));
        // Big endian by hand: the same fields, other byte order.
        let mut be = vec![0, 0, 0, 0];
        let t = m.header.stamp;
        be.extend((t.sec as u32).to_be_bytes());
        be.extend(t.nanosec.to_be_bytes());
        be.extend(6u32.to_be_bytes());
        be.extend(b"wrist\0");
        be.extend([0, 0]);
        be.extend(2u32.to_be_bytes());
        be.extend(4u32.to_be_bytes());
        be.extend(5u32.to_be_bytes());
        be.extend(b"bgr8\0");
        be.push(0);
        be.extend([0, 0]);
        be.extend(12u32.to_be_bytes());
        be.extend(24u32.to_be_bytes());
        be.extend(&m.data);
        assert_eq!(decode::<Image>(&be).expect("decode"), m);
        assert_eq!(ImageView::parse(&be).expect("parse").to_image(), m);
    }

    #[test]
    fn malformed_bytes_are_errors_like_decode_never_panics() {
        let good = encode_vec(&image("cam", 3, 2, "rgb8", 3)).expect("encode");
        // Every truncation, and every single-byte corruption of the prefix.
        for n in 0..good.len() {
            let cut = &good[..n];
            assert!(ImageView::parse(cut).is_err(), "truncated at {n}");
            assert!(decode::<Image>(cut).is_err(), "decode truncated at {n}");
        }
        for i in 0..good.len().min(48) {
            for v in [0x00, 0x7f, 0xff] {
                let mut b = good.clone();
                b[i] = v;
                let ours = ImageView::parse(&b).map(|v| v.to_image());
                let theirs = decode::<Image>(&b);
                assert_eq!(ours.is_ok(), theirs.is_ok(), "byte {i} = {v:#x}");
                if let (Ok(a), Ok(b)) = (ours, theirs) {
                    assert_eq!(a, b, "byte {i} = {v:#x}");
                }
            }
        }
        let mut long = good.clone();
        long.extend([0; 4]);
        assert!(matches!(
            ImageView::parse(&long),
            Err(MsgError::TrailingBytes { trailing: 4, .. })
        ));
        long.truncate(good.len() + 3);
        assert!(ImageView::parse(&long).is_ok());
        let huge_len = {
            let mut b = good.clone();
            let at = good.len() - 18 - 4;
            b[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
            b
        };
        assert!(ImageView::parse(&huge_len).is_err());
    }

    #[test]
    fn shared_image_keeps_fragmented_and_contiguous_payloads() {
        let m = image("head", 8, 4, "rgb8", 3);
        let cdr = encode_vec(&m).expect("encode");
        let one = SharedImage::from_payload(&ZBytes::from(cdr.clone())).expect("one");
        assert_eq!(one.view().to_image(), m);
        assert!(!one.in_shared_memory());
        let mut w = ZBytes::writer();
        w.append(ZBytes::from(cdr[..10].to_vec()));
        w.append(ZBytes::from(cdr[10..].to_vec()));
        let two = w.finish();
        assert!(contiguous(&two).is_none());
        let joined = SharedImage::from_payload(&two).expect("joined");
        assert_eq!(joined.view(), one.view());
        assert!(SharedImage::from_payload(&ZBytes::from(cdr[..20].to_vec())).is_err());
    }

    /// A `Publish<Image>` that keeps what it is given.
    struct Keep(std::sync::Mutex<Vec<Image>>);
    impl Publish<Image> for std::sync::Arc<Keep> {
        fn publish(&self, msg: &Image) -> Result<(), TransportError> {
            self.0.lock().unwrap().push(msg.clone());
            Ok(())
        }
        fn wire_name(&self) -> &str {
            "rt/cam"
        }
    }

    #[test]
    fn message_transports_publish_loans_and_deliver_shared_images() {
        let kept = std::sync::Arc::new(Keep(Default::default()));
        let p = MessageImages(Box::new(kept.clone()));
        let want = image("cam", 4, 3, "rgb8", 3);
        let layout = ImageLayout::packed("rgb8", 3, 4, 3).unwrap();
        let mut loan = p.loan("cam", &layout).unwrap();
        assert!(!loan.in_shared_memory());
        loan.data_mut().copy_from_slice(&want.data);
        loan.set_stamp(want.header.stamp);
        p.publish(loan).unwrap();
        // A heap loan given to a message transport is converted, not lost.
        let mut heap = ImageLoan::heap("cam", &layout);
        heap.data_mut().copy_from_slice(&want.data);
        heap.set_stamp(want.header.stamp);
        p.publish(heap).unwrap();
        assert_eq!(*kept.0.lock().unwrap(), vec![want.clone(), want.clone()]);
        assert_eq!(p.wire_name(), "rt/cam");

        let got = std::sync::Arc::new(std::sync::Mutex::new(None));
        let g = got.clone();
        let mut sink = owned_sink(Box::new(move |r| {
            *g.lock().unwrap() = Some(r.map(|x| (x.msg, x.recv_wall_ns, x.source_ns)));
        }));
        sink(Ok(Received {
            msg: want.clone(),
            recv: std::time::Instant::now(),
            recv_wall_ns: 5,
            source_ns: Some(4),
        }));
        let (img, wall, src) = got.lock().unwrap().take().unwrap().unwrap();
        assert_eq!((img.view().to_image(), wall, src), (want, 5, Some(4)));
        assert!(!img.in_shared_memory());
    }
}
