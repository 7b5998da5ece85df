"""ament_python package fvt_segmentation: works with colcon and with `pip install -e .`."""

from glob import glob
import os

from setuptools import find_packages, setup

package_name = 'fvt_segmentation'


def share(*patterns: str) -> list[str]:
    """Return the files matching ``patterns`` (relative to this file), sorted."""
    return sorted(f for p in patterns for f in glob(p) if os.path.isfile(f))


def share_tree(folder: str) -> list[tuple[str, list[str]]]:
    """Return data_files entries installing ``folder`` with its sub-folders kept."""
    dirs = sorted({os.path.dirname(f) for f in glob(folder + '/**/*', recursive=True)
                   if os.path.isfile(f)})
    return [('share/' + package_name + '/' + d, share(d + '/*')) for d in dirs]


# ROS 2 itself comes from apt on a car (colcon path) or from the PyPI wheels in a venv: the
# ros-<distro>-* metapackages pin one distro's wheels (CI tests Kilted and Jazzy this way).
ROS_PACKAGES = ('rclpy', 'sensor-msgs', 'std-msgs', 'diagnostic-msgs', 'rmw-fastrtps-cpp')
ROS_DISTROS_ON_PYPI = ('kilted', 'jazzy')

# ONNX Runtime is an explicit choice, one of the two extras: both builds install the module
# onnxruntime and must not be installed together. 'gpu' (onnxruntime-gpu) offers the TensorRT
# and CUDA providers and falls back to the CPU; 'cpu' (onnxruntime) is the small CPU-only
# build. 1.19 is the first that runs with numpy 2.
ONNXRUNTIME_EXTRAS = {'gpu': ['onnxruntime-gpu>=1.19'], 'cpu': ['onnxruntime>=1.19']}

# What a car runs is fvt_segmentation.core, .node and .bag (replay, record); the 'tools' extra
# adds what only fvt_segmentation.tools needs (the demo's GIF). The bundled recording (2.4 MB:
# the demo's input, the first TensorRT build's parity frames) is installed unless
# FVT_WITHOUT_RECORDING=1; without it, a new TensorRT engine is used without a parity check.
TOOLS_EXTRA = ['pillow']
RECORDING = [] if os.environ.get('FVT_WITHOUT_RECORDING') == '1' else share_tree('recordings')

setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['test', 'test.*']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
        ('share/' + package_name + '/launch', share('launch/*.launch.py')),
        ('share/' + package_name + '/config', share('config/*')),
        ('share/' + package_name + '/models',
         share('models/*.onnx', 'models/*.md', 'models/*.json')),
        *RECORDING,
    ],
    install_requires=[
        'setuptools',
        # The node suite passes with numpy 1.26 (opencv 4) and 2.x; numpy 1 keeps Humble's
        # apt stack, built against it, working.
        'numpy>=1.26',
        'opencv-python-headless',
        # 0.11.6: Writer(version=, storage_plugin=), typed Qos profiles and Writer.abort.
        'rosbags>=0.11.6',
        'ruamel.yaml',
        'tqdm',
    ],
    extras_require={
        **ONNXRUNTIME_EXTRAS,
        'tools': TOOLS_EXTRA,
        **{distro: [f'ros-{distro}-{name}' for name in ROS_PACKAGES]
           for distro in ROS_DISTROS_ON_PYPI},
        'test': ['pytest', 'pyyaml', 'onnx', 'ruff', 'colcon-common-extensions'],
    },
    zip_safe=True,
    maintainer='Future Vision Transport perception team',
    maintainer_email='perception@futurevisiontransport.example',
    description='Real-time semantic segmentation node (8 Cityscapes categories, ONNX Runtime).',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            'segmentation_node = fvt_segmentation.node.segmentation_node:main',
            'replay = fvt_segmentation.bag.replay:main',
            'record = fvt_segmentation.bag.record:main',
            'demo = fvt_segmentation.tools.demo:main',
            'bench = fvt_segmentation.tools.bench:main',
        ],
    },
)
