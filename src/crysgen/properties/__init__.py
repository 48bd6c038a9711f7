"""Property prediction: CGCNN models (pre-trained or trained by crysgen), found by name."""
