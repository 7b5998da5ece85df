"""Start segmentation_node for one camera, optionally with RViz.

    ros2 launch fvt_segmentation segmentation.launch.py image_topic:=/camera/image_raw
    ros2 launch fvt_segmentation segmentation.launch.py namespace:=front use_rviz:=true \
        image_topic:=/front/image_raw model_path:=/opt/models/unet.onnx log_level:=debug

The shipped DDS profiles (config/fastdds.xml, config/cyclonedds.xml: large-frame transport
settings) are applied through FASTRTPS_/FASTDDS_DEFAULT_PROFILES_FILE and CYCLONEDDS_URI,
unless the environment already sets them. See launch/two_cameras.launch.py for several
cameras.
"""

from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from fvt_segmentation.tools.dds_profiles import transport_environment

PACKAGE = 'fvt_segmentation'
EXECUTABLE = 'segmentation_node'
RVIZ_CONFIG = 'config/segmentation.rviz'
PARAMS_FILE = 'config/segmentation.yaml'


def _nodes(context, *args, **kwargs):
    """Build the nodes once the arguments are known (empty model_path/precision: not passed)."""
    def value(name):
        return LaunchConfiguration(name).perform(context)

    parameters = [value('params_file')]
    parameters += [{name: value(name)} for name in ('model_path', 'precision') if value(name)]
    remappings = [('image', value('image_topic'))] if value('image_topic') != 'image' else []
    namespace = value('namespace')
    segmentation = Node(
        package=PACKAGE, executable=EXECUTABLE, name=EXECUTABLE, namespace=namespace,
        parameters=parameters, remappings=remappings,
        ros_arguments=['--log-level', value('log_level')], output='screen', emulate_tty=True)
    # RViz runs in the same namespace with the same remapping, so the relative topics of
    # the shipped layout (image, segmentation_node/overlay, ...) point at this camera.
    rviz = Node(
        package='rviz2', executable='rviz2', name='rviz2', namespace=namespace,
        arguments=['-d', str(Path(get_package_share_directory(PACKAGE)) / RVIZ_CONFIG)],
        remappings=remappings, condition=IfCondition(value('use_rviz')), output='log')
    return [segmentation, rviz]


def generate_launch_description():
    """Return the launch description (arguments, DDS profile variables, nodes)."""
    share = Path(get_package_share_directory(PACKAGE))
    arguments = [
        DeclareLaunchArgument('params_file', default_value=str(share / PARAMS_FILE),
                              description='ROS parameters file for segmentation_node'),
        DeclareLaunchArgument('model_path', default_value='',
                              description='ONNX model; empty = model_path of params_file '
                                          '(default: the shipped model)'),
        DeclareLaunchArgument('precision', default_value='',
                              description='auto|float32|int8: which shipped file runs; empty = '
                                          'precision of params_file (default: auto)'),
        DeclareLaunchArgument('image_topic', default_value='image',
                              description='camera topic (sensor_msgs/Image); with '
                                          'input_transport compressed, <topic>/compressed'),
        DeclareLaunchArgument('namespace', default_value='',
                              description='namespace of the node (one per camera)'),
        DeclareLaunchArgument('use_rviz', default_value='false',
                              description='also start RViz with config/segmentation.rviz'),
        DeclareLaunchArgument('log_level', default_value='info',
                              choices=['debug', 'info', 'warn', 'error', 'fatal'],
                              description='log level of segmentation_node'),
    ]
    environment = [SetEnvironmentVariable(name, value)
                   for name, value in transport_environment(share).items()]
    return LaunchDescription([*arguments, *environment, OpaqueFunction(function=_nodes)])
