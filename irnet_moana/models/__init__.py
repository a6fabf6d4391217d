"""Networks: ResNet backbone, MoANA, the CAM network (WSSS) and the WSOL network."""
from .backbone import ARCHS, Backbone
from .cam_net import CAMHead, CAMNet
from .moana import MoANA
from .wsol_net import WSOLNet

__all__ = ["ARCHS", "Backbone", "CAMHead", "CAMNet", "MoANA", "WSOLNet"]
