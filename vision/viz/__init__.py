"""PNG pictures of labels and predictions, and label-efficiency plots.

Every picture function writes a PNG atomically, refuses to replace an existing file unless
``overwrite=True``, returns the path, and gives the same pixels for the same inputs. Rendering uses
matplotlib's Agg backend on figures that never touch pyplot, so it works without a display.

* :func:`render_point_cloud_panels` - top and oblique views of a cloud, one column per label set.
* :func:`event_frame_image`, :func:`render_event_panels` - event frames and masks side by side.
* :func:`render_detection_panels` - boxes and point labels on an image, one column per box set.
* :func:`label_efficiency_plot`, :func:`load_benchmark_rows` - metric vs labelled fraction.
* :func:`class_colors`, :data:`IGNORE_COLOR` - the shared palette.
"""

from vision.viz.detection import render_detection_panels
from vision.viz.events import event_frame_image, render_event_panels
from vision.viz.palette import IGNORE_COLOR, class_colors, colorize
from vision.viz.plots import label_efficiency_figure, label_efficiency_plot, load_benchmark_rows
from vision.viz.pointcloud import render_point_cloud_panels

__all__ = [
    "IGNORE_COLOR",
    "class_colors",
    "colorize",
    "event_frame_image",
    "label_efficiency_figure",
    "label_efficiency_plot",
    "load_benchmark_rows",
    "render_detection_panels",
    "render_event_panels",
    "render_point_cloud_panels",
]
