//! Devices: lists are empty (not errors) on a machine without devices, and
//! asking for a device that is not there is a typed error, never a panic.
//! On a machine with devices, the first of each kind opens and closes.

use kaigi_sdk::{
    devices, AudioInput, Client, ClientError, DeviceError, LocalStream, LocalStreamConfig,
    SyntheticSource, VideoInput,
};
use kaigi_tests::*;

fn camera_only(id: Option<&str>) -> LocalStreamConfig {
    LocalStreamConfig {
        video: VideoInput::Camera {
            id: id.map(str::to_owned),
            width: 640,
            height: 480,
        },
        audio: AudioInput::None,
        ..Default::default()
    }
}

fn microphone_only(id: Option<&str>) -> LocalStreamConfig {
    LocalStreamConfig {
        video: VideoInput::None,
        audio: AudioInput::Microphone {
            id: id.map(str::to_owned),
        },
        ..Default::default()
    }
}

#[tokio::test]
async fn missing_devices_are_typed_errors() {
    let user = "alice".parse().unwrap();
    // Listing never fails.
    let (cams, mics, speakers) = (
        devices::cameras(),
        devices::microphones(),
        devices::speakers(),
    );
    // A device id nobody has.
    for config in [
        camera_only(Some("no-such-camera")),
        microphone_only(Some("no-such-microphone")),
    ] {
        match LocalStream::new(&user, config) {
            Err(ClientError::Device(DeviceError::NotFound { id, .. })) => {
                assert!(id.starts_with("no-such"))
            }
            Err(e) => panic!("{e:?}"),
            Ok(_) => panic!("a missing device opened"),
        }
    }
    // The first device of each kind: opens where there is one, says there
    // is none where there is none.
    match (LocalStream::new(&user, camera_only(None)), cams.is_empty()) {
        (Err(ClientError::Device(DeviceError::NoDevice(_))), true) => {}
        (Ok(s), false) => {
            assert!(s.camera_id().is_some());
            s.close();
            assert!(!s.holds_devices(), "close releases the camera");
        }
        (Err(ClientError::Device(DeviceError::Open { .. })), false) => {} // busy
        (other, _) => panic!("camera: {:?}", other.err()),
    }
    match (
        LocalStream::new(&user, microphone_only(None)),
        mics.is_empty(),
    ) {
        (Err(ClientError::Device(DeviceError::NoDevice(_))), true) => {}
        (Ok(s), false) => {
            s.close();
            assert!(!s.holds_devices());
        }
        (Err(ClientError::Device(DeviceError::Open { .. })), false) => {}
        (other, _) => panic!("microphone: {:?}", other.err()),
    }
    let server = TestServer::start().await;
    let client = Client::new(server.options("alice")).unwrap();
    match (client.set_audio_output(None), speakers.is_empty()) {
        (Err(ClientError::Device(DeviceError::NoDevice(_))), true) => {
            assert_eq!(client.audio_output(), None)
        }
        (Ok(()), false) => client.stop_audio_output(),
        (Err(ClientError::Device(DeviceError::Open { .. })), false) => {}
        (other, _) => panic!("speaker: {other:?}"),
    }
    match client.set_audio_output(Some("no-such-speaker")) {
        Err(e @ ClientError::Device(DeviceError::NotFound { .. })) => {
            assert_eq!(e.name(), "DEVICE_NOT_FOUND")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn switching_needs_a_device_stream() {
    let user = "alice".parse().unwrap();
    let s = LocalStream::synthetic(&user, SyntheticSource::default()).unwrap();
    assert!(matches!(
        s.switch_camera(None),
        Err(ClientError::InvalidOptions(_))
    ));
    assert!(matches!(
        s.switch_microphone(None),
        Err(ClientError::InvalidOptions(_))
    ));
    let nothing = LocalStreamConfig {
        video: VideoInput::None,
        audio: AudioInput::None,
        ..Default::default()
    };
    assert!(matches!(
        LocalStream::new(&user, nothing),
        Err(ClientError::InvalidOptions(_))
    ));
    s.close();
    assert!(s.is_closed() && !s.holds_devices());
}
