"""Two cameras, two segmentation nodes: segmentation.launch.py included per namespace.

    ros2 launch fvt_segmentation two_cameras.launch.py \
        front_topic:=/front/image_raw rear_topic:=/rear/image_raw

Outputs: /front/segmentation_node/mask, /rear/segmentation_node/mask, ... Both nodes report
on /diagnostics under their own names (/front/segmentation_node: segmentation, ...). Each
node loads its own copy of the model; on one GPU that is two sessions side by side.
"""

from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, GroupAction, IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration

CAMERAS = ('front', 'rear')


def generate_launch_description():
    """Return one scoped include of segmentation.launch.py per camera."""
    single = str(Path(get_package_share_directory('fvt_segmentation'))
                 / 'launch' / 'segmentation.launch.py')
    actions = [DeclareLaunchArgument('model_path', default_value='',
                                     description='ONNX model for both cameras')]
    for camera in CAMERAS:
        actions.append(DeclareLaunchArgument(
            f'{camera}_topic', default_value=f'/{camera}/image_raw',
            description=f'image topic of the {camera} camera'))
        # A scoped group keeps one camera's launch arguments from leaking into the other.
        actions.append(GroupAction(scoped=True, actions=[IncludeLaunchDescription(
            PythonLaunchDescriptionSource(single),
            launch_arguments={
                'namespace': camera,
                'image_topic': LaunchConfiguration(f'{camera}_topic'),
                'model_path': LaunchConfiguration('model_path'),
                'use_rviz': 'false',
            }.items())]))
    return LaunchDescription(actions)
