//! A [`DeviceChoice`] resolved to a `tch::Device`, checking that an asked-for GPU exists.

pub use archsmith::train::{DeviceChoice, DeviceError};
use tch::{Cuda, Device};

/// The tch device of a choice, checking that an asked-for GPU exists.
pub fn resolve(choice: DeviceChoice) -> Result<Device, DeviceError> {
    match choice {
        DeviceChoice::Auto => Ok(Device::cuda_if_available()),
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Cuda(i) => {
            if !Cuda::is_available() {
                return Err(DeviceError::NoCuda {
                    asked: choice.to_string(),
                });
            }
            let count = Cuda::device_count() as usize;
            if i >= count {
                return Err(DeviceError::NoSuchGpu { index: i, count });
            }
            Ok(Device::Cuda(i))
        }
    }
}

/// Parses and resolves a device name in one go.
pub fn parse_device(s: &str) -> Result<Device, DeviceError> {
    resolve(s.parse::<DeviceChoice>()?)
}

/// The number of CUDA devices libtorch sees (0 without a GPU).
pub fn gpu_count() -> usize {
    Cuda::device_count().max(0) as usize
}

/// A device's name as results print it: `cpu` or `cuda:N`.
pub fn device_name(d: Device) -> String {
    match d {
        Device::Cpu => "cpu".into(),
        Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names() {
        assert_eq!(parse_device("cpu"), Ok(Device::Cpu));
    }

    #[test]
    fn cuda_without_a_gpu_is_a_clear_error() {
        if Cuda::is_available() {
            eprintln!("skipped: a GPU is present, so cuda resolves");
            assert!(parse_device("cuda").is_ok());
            return;
        }
        let e = parse_device("cuda:0").unwrap_err();
        assert!(e.to_string().contains("CUDA is not available"), "{e}");
        assert_eq!(parse_device("auto"), Ok(Device::Cpu));
    }
}
