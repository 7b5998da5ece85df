"""The shipped DDS profiles: where they are found, what they say, and that they carry frames.

The end-to-end test runs the frame publisher in a separate process (the SHM transport only
matters across processes) with the environment from ``transport_environment`` and checks
that every best-effort 2048x1024 rgb8 frame arrives intact. Without the profile most of them
are lost (measured by hand; see docs/transport.md).
"""

from __future__ import annotations

import os
from pathlib import Path
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest
from ros_helpers import ros_node, spin_until
from sensor_msgs.msg import Image

from fvt_segmentation.tools.dds_profiles import (
    CYCLONEDDS_VARIABLE,
    FASTDDS2_VARIABLE,
    FASTDDS3_VARIABLE,
    resolve_config_dir,
    transport_environment,
)
from fvt_segmentation.tools.frame_source import frame_digest, image_qos, synthetic_frame

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / 'config'
FULL_FRAME = 2048 * 1024 * 3


def test_environment_names_the_profiles_for_the_installed_fast_dds():
    kilted = transport_environment(environ={'ROS_DISTRO': 'kilted'})
    assert kilted == {FASTDDS3_VARIABLE: str(CONFIG / 'fastdds.xml'),
                      CYCLONEDDS_VARIABLE: (CONFIG / 'cyclonedds.xml').as_uri()}
    humble = transport_environment(environ={'ROS_DISTRO': 'humble'})
    assert set(humble) == {FASTDDS2_VARIABLE, CYCLONEDDS_VARIABLE}
    assert Path(humble[FASTDDS2_VARIABLE]).is_file()
    assert humble[CYCLONEDDS_VARIABLE].startswith('file:///')


def test_environment_leaves_user_choices_alone():
    user = {FASTDDS2_VARIABLE: '/etc/mine.xml', CYCLONEDDS_VARIABLE: 'file:///etc/c.xml',
            'ROS_DISTRO': 'kilted'}
    assert transport_environment(environ=user) == {}
    only_cyclone = {CYCLONEDDS_VARIABLE: 'file:///etc/c.xml', 'ROS_DISTRO': 'jazzy'}
    assert set(transport_environment(environ=only_cyclone)) == {FASTDDS2_VARIABLE}


def test_shell_exports_apply_in_a_shell():
    env = {k: v for k, v in os.environ.items()
           if k not in (FASTDDS2_VARIABLE, FASTDDS3_VARIABLE, CYCLONEDDS_VARIABLE)}
    env['ROS_DISTRO'] = 'jazzy'
    script = (f'eval "$({sys.executable} -m fvt_segmentation.tools.dds_profiles)"; echo '
              f'"${FASTDDS2_VARIABLE}|${CYCLONEDDS_VARIABLE}|${{{FASTDDS3_VARIABLE}:-unset}}"')
    result = subprocess.run(['bash', '-c', script], env=env, cwd=REPO, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (f'{CONFIG / "fastdds.xml"}|'
                                     f'{(CONFIG / "cyclonedds.xml").as_uri()}|unset')


def test_config_dir_is_found_from_share_dir_or_config_dir(tmp_path):
    assert resolve_config_dir(REPO) == CONFIG
    assert resolve_config_dir(CONFIG) == CONFIG
    assert (resolve_config_dir() / 'fastdds.xml').is_file()
    with pytest.raises(FileNotFoundError, match='fastdds.xml'):
        resolve_config_dir(tmp_path)


FASTDDS_NS = {'p': 'http://www.eprosima.com/XMLSchemas/fastRTPS_Profiles'}


def _int(element: ET.Element, tag: str) -> int:
    found = element.find(tag, FASTDDS_NS)
    assert found is not None, f'{tag} missing'
    return int(found.text)


def test_fast_dds_profile_sizes_fit_full_resolution_frames():
    root = ET.parse(CONFIG / 'fastdds.xml').getroot()
    ns = FASTDDS_NS
    descriptors = {d.find('p:transport_id', ns).text: d
                   for d in root.iterfind('.//p:transport_descriptor', ns)}
    shm = [d for d in descriptors.values() if d.find('p:type', ns).text == 'SHM']
    udp = [d for d in descriptors.values() if d.find('p:type', ns).text == 'UDPv4']
    assert len(shm) == 1 and len(udp) == 1
    segment = _int(shm[0], 'p:segment_size')
    # Input frame plus the node's four full-resolution outputs, more than once over.
    assert segment >= 2 * (FULL_FRAME * 3 + 2 * 2048 * 1024)
    assert _int(shm[0], 'p:maxMessageSize') <= segment  # Fast DDS refuses the transport else
    assert _int(udp[0], 'p:maxMessageSize') <= 65500
    assert _int(udp[0], 'p:receiveBufferSize') >= FULL_FRAME
    participant = root.find('.//p:participant', ns)
    assert participant.get('is_default_profile') == 'true'
    assert participant.find('.//p:useBuiltinTransports', ns).text == 'false'
    used = [t.text for t in participant.iterfind('.//p:userTransports/p:transport_id', ns)]
    assert sorted(used) == sorted(descriptors)


def test_cyclone_config_is_safe_to_apply_everywhere():
    root = ET.parse(CONFIG / 'cyclonedds.xml').getroot()
    ns = {'c': 'https://cdds.io/config'}
    domain = root.find('c:Domain', ns)
    assert domain.get('Id') == 'any'
    # Cyclone builds without iceoryx reject this element and then fail to start.
    assert domain.find('c:SharedMemory', ns) is None
    buffer = domain.find('c:Internal/c:SocketReceiveBufferSize', ns)
    assert buffer.get('min') == 'default'  # a hard minimum fails where rmem_max is low
    sizes = {tag: domain.find(f'c:General/c:{tag}', ns).text
             for tag in ('MaxMessageSize', 'FragmentSize')}
    assert all(v.endswith('B') for v in sizes.values())
    assert int(sizes['FragmentSize'][:-1]) < int(sizes['MaxMessageSize'][:-1]) <= 65500


def test_full_resolution_best_effort_frames_all_arrive_across_processes():
    count, width, height = 12, 2048, 1024
    expected = [frame_digest(synthetic_frame(i, height, width)) for i in range(count)]
    env = dict(os.environ)
    env.update(transport_environment())
    received: list[str] = []
    shapes: set[tuple[int, int, str]] = set()

    def on_image(msg: Image) -> None:
        received.append(frame_digest(msg.data))
        shapes.add((msg.height, msg.width, msg.encoding))

    with ros_node('transport_probe') as (node, executor):
        node.create_subscription(Image, '/transport_probe', on_image,
                                 image_qos(reliable=False, depth=count))
        publisher = subprocess.Popen(
            [sys.executable, '-m', 'fvt_segmentation.tools.frame_source', '--topic',
             '/transport_probe', '--count', str(count), '--width', str(width), '--height',
             str(height), '--rate', '10', '--qos', 'best_effort', '--timeout', '30'],
            env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            spin_until(executor, lambda: publisher.poll() is not None, timeout=60)
            spin_until(executor, lambda: len(received) >= count, timeout=2)
        finally:
            if publisher.poll() is None:
                publisher.kill()
            out, err = publisher.communicate()
    assert publisher.returncode == 0, err
    assert 'published 12 frames' in out
    assert 'XMLPARSER' not in err and 'rror' not in err, err  # the profile loaded cleanly
    assert shapes == {(height, width, 'rgb8')}
    assert received == expected
