from qvision.cli import main

main()
