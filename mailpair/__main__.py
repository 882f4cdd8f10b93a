from mailpair.admin.cli import main

main()
