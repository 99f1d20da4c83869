//! The byte pipe under the bus: a small trait, implemented for a serial port
//! (`serialport`, default features off: no libudev) and for a pseudo-terminal
//! pair in tests.

use std::io::{self, Read, Write};
use std::time::Duration;

/// What the bus needs from a port.
pub trait Port: Send {
    /// Write every byte (blocking).
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Read what is there, waiting at most `timeout` for the first byte;
    /// Ok(0) when nothing came.
    fn read_some(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<usize>;
    /// Discard pending input; the number of bytes discarded.
    fn drain_input(&mut self) -> io::Result<usize>;
    /// The line rate, for wire-time arithmetic (bits per second).
    fn baud(&self) -> u32;
    /// The port's name, for messages.
    fn name(&self) -> String;
}

/// A serial port (USB adapter, or a pty slave) at a fixed baud rate, 8N1.
pub struct SerialPortIo {
    port: Box<dyn serialport::SerialPort>,
    name: String,
    baud: u32,
    scratch: [u8; 256],
}

impl SerialPortIo {
    /// Open `path` at `baud` (8N1, no flow control). One line naming the port on failure.
    pub fn open(path: &str, baud: u32) -> io::Result<SerialPortIo> {
        let port = serialport::new(path, baud)
            .timeout(Duration::from_millis(1))
            .open()
            .map_err(|e| {
                io::Error::new(io::ErrorKind::Other, format!("serial port {path}: {e}"))
            })?;
        Ok(SerialPortIo {
            port,
            name: path.to_string(),
            baud,
            scratch: [0; 256],
        })
    }

    /// Wrap an open port (a pty end in tests).
    pub fn from_port(port: Box<dyn serialport::SerialPort>, name: &str, baud: u32) -> SerialPortIo {
        SerialPortIo {
            port,
            name: name.to_string(),
            baud,
            scratch: [0; 256],
        }
    }
}

fn serr(e: serialport::Error) -> io::Error {
    io::Error::new(io::ErrorKind::Other, e.to_string())
}

impl Port for SerialPortIo {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.port.write_all(bytes)?;
        self.port.flush()
    }

    fn read_some(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<usize> {
        self.port
            .set_timeout(timeout.max(Duration::from_micros(100)))
            .map_err(serr)?;
        match self.port.read(buf) {
            Ok(n) => Ok(n),
            Err(e)
                if e.kind() == io::ErrorKind::TimedOut || e.kind() == io::ErrorKind::WouldBlock =>
            {
                Ok(0)
            }
            Err(e) => Err(e),
        }
    }

    fn drain_input(&mut self) -> io::Result<usize> {
        let mut total = 0;
        loop {
            let avail = self.port.bytes_to_read().map_err(serr)? as usize;
            if avail == 0 {
                return Ok(total);
            }
            let n = self.port.read(&mut self.scratch[..avail.min(256)])?;
            if n == 0 {
                return Ok(total);
            }
            total += n;
        }
    }

    fn baud(&self) -> u32 {
        self.baud
    }

    fn name(&self) -> String {
        self.name.clone()
    }
}
